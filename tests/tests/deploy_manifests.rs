//! The manifests users apply (`deploy/`), against the real API server and the
//! real kubectl (with its built-in kustomize): the base applies server-side,
//! installs no storage node, and what was stored has the essentials (probes
//! the operator serves, limits, non-root and read-only, args the binary
//! accepts, least-privilege RBAC, the CRD established); the `io-engine`
//! overlay runs the Mayastor io-engine as Mayastor's chart does, with flags
//! the built engine accepts, and the `stand-in` overlay says it stores
//! nothing real; the API server accepts every manifest file under
//! `deploy/` in a server-side dry run; the operator, running as the deploy
//! ServiceAccount, performs the seed's kubectl lifecycle; and the
//! `custom-policy` overlay carrying the `retain` example keeps a pool on its
//! node when its resource is deleted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Api, Client};
use msp_operator::lifecycle::run::RunArgs;
use msp_operator::policy::watch as policy_watch;
use msp_operator::state::crd::{MayastorPool, PoolState};
use msp_policy_engine::bundled;
use msp_tests::control_plane::{ControlPlane, Identity, run};
use msp_tests::loopdev::{LoopDevice, MIB, require_loop_devices};
use msp_tests::operator::{
    Scene, WAIT, kubectl_stdin, ledger_pools, node_pools, wait_for, wait_pool,
};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
const STORAGE_NODE: &str = env!("CARGO_BIN_EXE_storage-node");
const CRD_NAME: &str = "mayastorpools.openebs.io";
const NS: &str = "mayastor";

/// Every kustomization under deploy/, relative to it. Each is applied by a
/// test here (crd and rbac through the base): a new one fails
/// `every_manifest_passes_a_server_side_dry_run` until a test applies it.
const KUSTOMIZATIONS: &[&str] = &[
    "base",
    "crd",
    "overlays/custom-policy",
    "overlays/io-engine",
    "overlays/seed-example",
    "overlays/stand-in",
    "rbac",
];

fn deploy(path: &str) -> PathBuf {
    Path::new(DEPLOY).join(path)
}

/// `kubectl apply --server-side -k DIR` as admin.
async fn apply_kustomization(cp: &ControlPlane, dir: &str) -> anyhow::Result<String> {
    let mut apply = cp.kubectl();
    apply
        .args(["apply", "--server-side", "-k"])
        .arg(deploy(dir));
    Ok(run(apply).await?)
}

/// Waits until the CRD is Established and kubectl's discovery resolves `msp`
/// (which follows Established by a moment).
async fn wait_crd_served(cp: &ControlPlane) -> anyhow::Result<()> {
    let mut wait = cp.kubectl();
    wait.args(["wait", "--for=condition=Established", "--timeout=60s"])
        .arg(format!("crd/{CRD_NAME}"));
    run(wait).await?;
    wait_for("kubectl discovery of mayastorpools", WAIT, || async {
        let mut resources = cp.kubectl();
        resources.args(["api-resources", "--api-group=openebs.io", "-o", "name"]);
        run(resources)
            .await
            .is_ok_and(|out| out.lines().any(|l| l == CRD_NAME))
    })
    .await
}

/// `kubectl auth can-i VERB RESOURCE[/SUBRESOURCE] -n mayastor` as
/// `identity` (exit status 1 means "no").
async fn can_i(
    cp: &ControlPlane,
    identity: &Identity,
    verb: &str,
    resource: &str,
) -> anyhow::Result<bool> {
    can_i_in(cp, identity, NS, verb, resource).await
}

/// [`can_i`] in namespace `ns`.
async fn can_i_in(
    cp: &ControlPlane,
    identity: &Identity,
    ns: &str,
    verb: &str,
    resource: &str,
) -> anyhow::Result<bool> {
    let mut can = cp.kubectl_as(identity);
    can.args(["auth", "can-i", verb, "-n", ns]);
    match resource.split_once('/') {
        // kubectl reads "resource/x" as a named object: subresources go in a flag.
        Some((resource, sub)) => can.arg(resource).arg(format!("--subresource={sub}")),
        None => can.arg(resource),
    };
    let out = tokio::process::Command::from(can).output().await?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => anyhow::bail!(
            "kubectl auth can-i {verb} {resource}: {other:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A container's args with Kubernetes' `$(VAR)` references to its env
/// values substituted, as the kubelet does.
fn expanded_args(container: &Container) -> Vec<String> {
    let env = container.env.clone().unwrap_or_default();
    container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|arg| {
            env.iter().fold(arg, |arg, var| {
                // fieldRef values are only known to the kubelet: use a stand-in.
                let value = var
                    .value
                    .clone()
                    .unwrap_or_else(|| format!("{}-value", var.name.to_lowercase()));
                arg.replace(&format!("$({})", var.name), &value)
            })
        })
        .collect()
}

fn container_port(container: &Container, name: &str) -> Option<i32> {
    container
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_and_seed_overlay_apply_server_side_with_the_essentials() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    apply_kustomization(&cp, "base").await?;

    // The CRD is established.
    let crd = Api::<CustomResourceDefinition>::all(admin.clone())
        .get(CRD_NAME)
        .await?;
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if !established {
        wait_crd_served(&cp).await?;
    }

    // The namespace admits the privileged storage node.
    let ns = Api::<Namespace>::all(admin.clone()).get(NS).await?;
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged")
    );

    // The operator Deployment.
    let dep = Api::<Deployment>::namespaced(admin.clone(), NS)
        .get("msp-operator")
        .await?;
    let spec = dep
        .spec
        .ok_or_else(|| anyhow::anyhow!("Deployment without spec"))?;
    assert_eq!(
        spec.replicas,
        Some(2),
        "two operators: a leader and a standby"
    );
    let strategy = spec.strategy.clone().unwrap_or_default();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.unwrap_or_default();
    assert_eq!(
        (rolling.max_unavailable, rolling.max_surge),
        (Some(IntOrString::Int(0)), Some(IntOrString::Int(1))),
        "a rollout brings a new replica up before an old one goes"
    );
    let pod = spec
        .template
        .spec
        .ok_or_else(|| anyhow::anyhow!("Deployment without pod spec"))?;
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .cloned()
        .unwrap_or_default();
    assert!(
        anti.iter()
            .any(|t| t.pod_affinity_term.topology_key == "kubernetes.io/hostname"),
        "replicas spread over nodes where possible: {anti:?}"
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(admin.clone(), NS)
        .get("msp-operator")
        .await?;
    let pdb_spec = pdb.spec.unwrap_or_default();
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    assert!(pdb_spec.selector.is_some());
    assert_eq!(pod.service_account_name.as_deref(), Some("msp-operator"));
    let pod_security = pod.security_context.clone().unwrap_or_default();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(
        pod_security.run_as_user.is_some_and(|u| u != 0),
        "runAsUser must be non-zero"
    );
    let [op] = pod.containers.as_slice() else {
        anyhow::bail!(
            "expected one operator container, got {}",
            pod.containers.len()
        );
    };
    let security = op.security_context.clone().unwrap_or_default();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_ne!(security.privileged, Some(true));
    assert!(
        security
            .capabilities
            .and_then(|c| c.drop)
            .is_some_and(|d| d.iter().any(|c| c == "ALL")),
        "all capabilities dropped"
    );
    let resources = op.resources.clone().unwrap_or_default();
    for (what, map) in [
        ("requests", resources.requests),
        ("limits", resources.limits),
    ] {
        let map = map.unwrap_or_default();
        assert!(
            map.contains_key("cpu") && map.contains_key("memory"),
            "operator {what}: {map:?}"
        );
    }
    let liveness = op
        .liveness_probe
        .clone()
        .and_then(|p| p.http_get)
        .ok_or_else(|| anyhow::anyhow!("no HTTP liveness probe"))?;
    let readiness = op
        .readiness_probe
        .clone()
        .and_then(|p| p.http_get)
        .ok_or_else(|| anyhow::anyhow!("no HTTP readiness probe"))?;
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    // The args are the operator's own flags, and the ports agree with them.
    let args = expanded_args(op);
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "args {args:?}"
    );
    let run_args = RunArgs::from_flags(&args[1..])
        .map_err(|e| anyhow::anyhow!("Deployment args {args:?}: {e}"))?;
    assert_eq!(run_args.namespace, NS);
    // The Lease holder is the pod's name, from the downward API.
    let field = |name: &str| {
        op.env
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| {
                v.value_from
                    .as_ref()?
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.clone())
            })
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(field("POD_IP").as_deref(), Some("status.podIP"));
    assert_eq!(run_args.policy_configmap, policy_watch::DEFAULT_NAME);
    assert_eq!(
        container_port(op, "registration"),
        Some(i32::from(run_args.registration_addr.port()))
    );
    assert_eq!(
        container_port(op, "http"),
        Some(i32::from(run_args.metrics_addr.port()))
    );
    assert!(
        run_args.registration_addr.ip().is_unspecified(),
        "registration must listen on all addresses"
    );
    assert!(
        run_args.metrics_addr.ip().is_unspecified(),
        "probes come from the kubelet"
    );

    // The Service selects the operator's pods and exposes registration.
    let svc = Api::<Service>::namespaced(admin.clone(), NS)
        .get("msp-operator")
        .await?;
    let svc_spec = svc.spec.unwrap_or_default();
    let pod_labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let selector = svc_spec.selector.unwrap_or_default();
    assert!(!selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let registration_port = svc_spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("registration"))
        .map(|p| p.port)
        .ok_or_else(|| anyhow::anyhow!("Service has no registration port"))?;

    // Production applies the base: it installs no storage node.
    let daemonsets = Api::<DaemonSet>::all(admin.clone())
        .list(&Default::default())
        .await?;
    assert!(
        daemonsets.items.is_empty(),
        "deploy/base installs a DaemonSet: {:?}",
        daemonsets
            .items
            .iter()
            .map(|d| d.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        registration_url(&admin).await?,
        format!("http://msp-operator.{NS}.svc:{registration_port}")
    );

    // RBAC: on MayastorPools the operator only reads, and writes status.
    let role = Api::<ClusterRole>::all(admin.clone())
        .get("msp-operator")
        .await?;
    let writes = [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
    ];
    for rule in role.rules.unwrap_or_default() {
        let groups = rule.api_groups.unwrap_or_default();
        let resources = rule.resources.unwrap_or_default();
        let touches_pools = (groups.iter().any(|g| g == "openebs.io" || g == "*"))
            && resources.iter().any(|r| r == "mayastorpools" || r == "*");
        if touches_pools {
            assert!(
                !rule.verbs.iter().any(|v| writes.contains(&v.as_str())),
                "write verb on mayastorpools: {:?}",
                rule.verbs
            );
        }
    }
    // What the API server actually allows each ServiceAccount.
    let operator = cp.service_account(NS, "msp-operator")?;
    for verb in ["get", "list", "watch"] {
        assert!(
            can_i(&cp, &operator, verb, "mayastorpools.openebs.io").await?,
            "operator cannot {verb} pools"
        );
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !can_i(&cp, &operator, verb, "mayastorpools.openebs.io").await?,
            "operator may {verb} pools"
        );
    }
    assert!(can_i(&cp, &operator, "patch", "mayastorpools.openebs.io/status").await?);
    assert!(
        !can_i(&cp, &operator, "get", "secrets").await?,
        "operator may read secrets"
    );
    // ConfigMaps (ledger, policy) only in its own namespace.
    assert!(
        can_i(&cp, &operator, "create", "configmaps").await?,
        "operator cannot write its ledger"
    );
    assert!(
        !can_i_in(&cp, &operator, "kube-system", "list", "configmaps").await?,
        "operator may read ConfigMaps of other namespaces"
    );
    // The leader Lease, also only in its own namespace.
    for verb in ["get", "create", "update", "watch"] {
        assert!(
            can_i(&cp, &operator, verb, "leases.coordination.k8s.io").await?,
            "operator cannot {verb} its Lease"
        );
        assert!(
            !can_i_in(
                &cp,
                &operator,
                "kube-system",
                verb,
                "leases.coordination.k8s.io"
            )
            .await?,
            "operator may {verb} Leases of other namespaces"
        );
    }
    assert!(
        !can_i(&cp, &operator, "delete", "leases.coordination.k8s.io").await?,
        "operator may delete Leases"
    );
    // The seed's example overlay: base plus the pool, stored as written.
    wait_crd_served(&cp).await?;
    apply_kustomization(&cp, "overlays/seed-example").await?;
    let pool = Api::<MayastorPool>::namespaced(admin.clone(), NS)
        .get("my-new-pool")
        .await?;
    assert_eq!(pool.spec.node, "node1");
    assert_eq!(pool.spec.disks, vec!["/dev/loop0".to_string()]);
    assert!(
        pool.status.is_none(),
        "no operator runs here: status stays empty"
    );
    Ok(())
}

/// Where storage nodes register: the operator's Service, by its cluster DNS
/// name, on its `registration` port (as stored by the API server).
async fn registration_url(admin: &Client) -> anyhow::Result<String> {
    let svc = Api::<Service>::namespaced(admin.clone(), NS)
        .get("msp-operator")
        .await?;
    let port = svc
        .spec
        .unwrap_or_default()
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("registration"))
        .map(|p| p.port)
        .ok_or_else(|| anyhow::anyhow!("Service has no registration port"))?;
    Ok(format!("http://msp-operator.{NS}.svc:{port}"))
}

/// The one container of DaemonSet `name` and its pod spec, as stored.
async fn daemonset_pod(
    admin: &Client,
    name: &str,
) -> anyhow::Result<(k8s_openapi::api::core::v1::PodSpec, Container)> {
    let ds = Api::<DaemonSet>::namespaced(admin.clone(), NS)
        .get(name)
        .await?;
    let pod = ds
        .spec
        .and_then(|s| s.template.spec)
        .ok_or_else(|| anyhow::anyhow!("DaemonSet {name} without pod spec"))?;
    let [container] = pod.containers.as_slice() else {
        anyhow::bail!(
            "expected one container in {name}, got {}",
            pod.containers.len()
        );
    };
    let container = container.clone();
    Ok((pod, container))
}

/// The volume of `pod` mounted at `path` in `container`.
fn volume_at(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    container: &Container,
    path: &str,
) -> Option<k8s_openapi::api::core::v1::Volume> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)?;
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .cloned()
}

/// What every storage node DaemonSet `name` of an overlay has in common, as
/// stored: nodes labelled for Mayastor only, no API token and no rights for
/// its ServiceAccount `name`, a privileged container with the host's /dev.
/// Its pod spec and container.
async fn storage_node_pod(
    cp: &ControlPlane,
    admin: &Client,
    name: &str,
) -> anyhow::Result<(k8s_openapi::api::core::v1::PodSpec, Container)> {
    let (pod, container) = daemonset_pod(admin, name).await?;
    assert_eq!(
        pod.node_selector
            .clone()
            .unwrap_or_default()
            .get("openebs.io/engine")
            .map(String::as_str),
        Some("mayastor")
    );
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "the storage node needs no API token"
    );
    assert_eq!(
        container
            .security_context
            .clone()
            .and_then(|s| s.privileged),
        Some(true),
        "raw block devices need a privileged container"
    );
    assert!(
        volume_at(&pod, &container, "/dev")
            .and_then(|v| v.host_path)
            .is_some_and(|h| h.path == "/dev"),
        "host /dev mounted at /dev"
    );
    let account = cp.service_account(NS, name)?;
    assert!(!can_i(cp, &account, "get", "mayastorpools.openebs.io").await?);
    assert!(!can_i(cp, &account, "get", "configmaps").await?);
    Ok((pod, container))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_in_overlay_adds_the_stand_in_storage_node_and_says_it_stores_nothing_real()
-> anyhow::Result<()> {
    for file in [
        "overlays/stand-in/kustomization.yaml",
        "overlays/stand-in/storage-node.yaml",
    ] {
        let text = std::fs::read_to_string(deploy(file))?;
        assert!(
            text.starts_with("# THE STAND-IN STORES NOTHING REAL"),
            "{file} does not open with the warning"
        );
    }
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    apply_kustomization(&cp, "overlays/stand-in").await?;
    let (_, sn) = storage_node_pod(&cp, &admin, "msp-storage-node").await?;
    for probe in [&sn.liveness_probe, &sn.readiness_probe] {
        let port = probe.clone().and_then(|p| p.tcp_socket).map(|t| t.port);
        assert_eq!(
            port,
            Some(IntOrString::String("grpc".into())),
            "storage node probes its gRPC port"
        );
    }
    // It registers with the operator's Service, and its flags exist.
    let sn_args = expanded_args(&sn);
    let grpc_port = sn_args
        .iter()
        .find_map(|a| a.strip_prefix("--grpc-endpoint="))
        .and_then(|e| e.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<i32>().ok());
    assert!(
        grpc_port.is_some() && container_port(&sn, "grpc") == grpc_port,
        "gRPC port {grpc_port:?} not the container's"
    );
    let endpoint = format!(
        "--registration-endpoint={}",
        registration_url(&admin).await?
    );
    assert!(
        sn_args.contains(&endpoint),
        "storage node args {sn_args:?} lack {endpoint}"
    );
    let help = std::process::Command::new(STORAGE_NODE)
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in &sn_args {
        let flag = arg.split('=').next().unwrap_or(arg);
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "storage-node has no {flag}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_engine_overlay_runs_the_engine_as_mayastors_chart_does() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    apply_kustomization(&cp, "overlays/io-engine").await?;
    let (pod, engine) = storage_node_pod(&cp, &admin, "msp-io-engine").await?;
    assert_eq!(
        pod.host_network,
        Some(true),
        "NVMe-oF on the node's address"
    );
    assert_eq!(
        pod.dns_policy.as_deref(),
        Some("ClusterFirstWithHostNet"),
        "the operator's Service name must resolve from the host network"
    );
    // Hugepages requested and limited alike (the kubelet wants both equal),
    // with memory beside them as Kubernetes requires.
    let resources = engine.resources.clone().unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let huge = requests.get("hugepages-2Mi").map(|q| q.0.clone());
    assert!(huge.is_some(), "no hugepages-2Mi request: {requests:?}");
    assert_eq!(huge, limits.get("hugepages-2Mi").map(|q| q.0.clone()));
    assert!(requests.contains_key("memory") && limits.contains_key("memory"));
    // The host's udev database, a hugetlbfs volume.
    let host_path = |path: &str| {
        volume_at(&pod, &engine, path)
            .and_then(|v| v.host_path)
            .map(|h| h.path)
    };
    assert_eq!(host_path("/run/udev").as_deref(), Some("/run/udev"));
    let hugepage_volumes: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.empty_dir
                .as_ref()
                .is_some_and(|e| e.medium.as_deref() == Some("HugePages"))
        })
        .collect();
    assert_eq!(hugepage_volumes.len(), 1, "one hugetlbfs emptyDir");
    assert!(
        engine
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == hugepage_volumes[0].name),
        "the hugetlbfs volume is mounted"
    );
    // Node name, gRPC endpoint (the container's port) and registration
    // endpoint (the operator's Service).
    let args = expanded_args(&engine);
    let value = |flag: &str| args.iter().find_map(|a| a.strip_prefix(flag));
    assert_eq!(value("-N"), Some("my_node_name-value"), "{args:?}");
    let grpc_port = value("-g")
        .and_then(|e| e.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<i32>().ok());
    assert!(
        grpc_port.is_some() && container_port(&engine, "grpc") == grpc_port,
        "gRPC port {grpc_port:?} not the container's ({args:?})"
    );
    let registration = registration_url(&admin).await?;
    assert_eq!(value("-R"), Some(registration.as_str()), "{args:?}");
    let field = |name: &str| {
        engine
            .env
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.value_from.as_ref()?.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("MY_NODE_NAME").as_deref(), Some("spec.nodeName"));
    assert_eq!(field("MY_POD_IP").as_deref(), Some("status.podIP"));

    // The flags are the built engine's own (its --help lists each).
    let binary = msp_tests::io_engine::binary();
    if msp_tests::require(
        &format!(
            "the io-engine at {} (tests/io-engine/build.sh)",
            binary.display()
        ),
        binary.is_file(),
    ) {
        let help = std::process::Command::new(&binary).arg("--help").output()?;
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in ["-g", "-N", "-R"] {
            assert!(
                help.contains(&format!("{flag},")) || help.contains(&format!("{flag} <")),
                "io-engine --help has no {flag}:\n{help}"
            );
        }
        anyhow::ensure!(
            engine.command.as_deref() == Some(&["io-engine".to_string()][..]),
            "the container runs {:?}",
            engine.command
        );
    }
    Ok(())
}

/// Manifest files under deploy/ (YAML that is not a kustomization), sorted.
/// Not under `helm/` (templates, rendered and checked by helm_chart.rs) nor
/// `monitoring/` (a Prometheus rule file, checked by monitoring.rs).
fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path == deploy("helm") || path == deploy("monitoring") {
            continue;
        }
        if path.is_dir() {
            manifest_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && path.file_stem().is_some_and(|s| s != "kustomization")
        {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_manifest_passes_a_server_side_dry_run() -> anyhow::Result<()> {
    // Every kustomization is one the tests here apply.
    let mut files = Vec::new();
    manifest_files(Path::new(DEPLOY), &mut files)?;
    let kustomizations: BTreeSet<String> = walk_kustomizations(Path::new(DEPLOY))?;
    let known: BTreeSet<String> = KUSTOMIZATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        kustomizations, known,
        "a kustomization no test applies (add it to a test here)"
    );

    let cp = ControlPlane::start().await?;
    // What namespaced objects and pools need first: the namespace, the CRD.
    let mut namespace = cp.kubectl();
    namespace
        .args(["apply", "--server-side", "-f"])
        .arg(deploy("base/namespace.yaml"));
    run(namespace).await?;
    let mut crd = cp.kubectl();
    crd.args(["apply", "--server-side", "-f"])
        .arg(deploy("crd/mayastorpool.yaml"));
    run(crd).await?;
    wait_crd_served(&cp).await?;

    for needed in [
        "base/namespace.yaml",
        "crd/mayastorpool.yaml",
        "rbac/operator.yaml",
        "base/operator.yaml",
    ] {
        assert!(
            files.contains(&deploy(needed)),
            "{needed} not found by the walk: {files:?}"
        );
    }
    for file in &files {
        let mut dry = cp.kubectl();
        dry.args(["apply", "--dry-run=server", "-f"]).arg(file);
        let out = run(dry)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        assert!(
            out.contains("(server dry run)"),
            "{}: {out}",
            file.display()
        );
    }
    Ok(())
}

/// Directories under `dir` holding a kustomization.yaml, relative to `dir`.
fn walk_kustomizations(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml")
                && let Some(parent) = path.parent().and_then(|p| p.strip_prefix(dir).ok())
            {
                found.insert(parent.to_string_lossy().into_owned());
            }
        }
    }
    Ok(found)
}

/// `kubectl create -f -` with `manifest`, as admin.
fn kubectl_create(cp: &ControlPlane, manifest: &str) -> anyhow::Result<()> {
    kubectl_stdin(cp, &["create", "-f", "-"], manifest).map(drop)
}

/// The seed example's pool manifest with its disk replaced by `disk`.
fn seed_pool_on(disk: &str) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(deploy("overlays/seed-example/pool.yaml"))?;
    anyhow::ensure!(
        manifest.contains("\"/dev/loop0\""),
        "the seed example no longer uses /dev/loop0"
    );
    Ok(manifest.replace("\"/dev/loop0\"", &format!("\"{disk}\"")))
}

/// The scene on `cp` (the base applied) with the operator as the deploy
/// ServiceAccount and the deploy's probe paths answering; node1 with its
/// storage node registered.
async fn scene_as_service_account(cp: ControlPlane, admin: &Client) -> anyhow::Result<Scene> {
    let identity = cp.service_account(NS, "msp-operator")?;
    let operator_client = identity.client().await?;
    let scene = Scene::start_on(cp, operator_client, STORAGE_NODE, "node1").await?;
    let dep = Api::<Deployment>::namespaced(admin.clone(), NS)
        .get("msp-operator")
        .await?;
    let container = dep
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .ok_or_else(|| anyhow::anyhow!("Deployment without a container"))?;
    for probe in [container.liveness_probe, container.readiness_probe] {
        let path = probe
            .and_then(|p| p.http_get)
            .and_then(|h| h.path)
            .unwrap_or_default();
        let (code, body) = scene.op.http_get(&path).await?;
        assert_eq!(code, 200, "probe {path}: {body}");
    }
    Ok(scene)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_lifecycle_with_the_operator_as_its_service_account() -> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    apply_kustomization(&cp, "base").await?;
    wait_crd_served(&cp).await?;
    let scene = scene_as_service_account(cp, &admin).await?;
    let disk = LoopDevice::create(64 * MIB)?;

    // The seed's create (its example file, on this test's loop device).
    kubectl_create(&scene.cp, &seed_pool_on(&disk.path_str())?)?;
    wait_for(
        "kubectl -n mayastor get msp shows my-new-pool online",
        WAIT,
        || async {
            let mut get = scene.cp.kubectl();
            get.args(["-n", NS, "get", "msp"]);
            run(get).await.is_ok_and(|out| {
                out.lines().any(|l| {
                    l.split_whitespace().next() == Some("my-new-pool")
                        && l.split_whitespace().any(|w| w == "online")
                })
            })
        },
    )
    .await?;
    assert_eq!(
        node_pools(scene.sn.endpoint()).await?,
        vec!["my-new-pool".to_string()]
    );
    assert_eq!(
        ledger_pools(&admin, "node1").await?,
        vec!["my-new-pool".to_string()]
    );

    // The seed's delete: gone from the resource list, the node and the ledger.
    let mut delete = scene.cp.kubectl();
    delete.args(["-n", NS, "delete", "msp", "my-new-pool"]);
    run(delete).await?;
    wait_for("my-new-pool destroyed on the node", WAIT, || async {
        node_pools(scene.sn.endpoint())
            .await
            .is_ok_and(|p| p.is_empty())
    })
    .await?;
    wait_for("ledger emptied", WAIT, || async {
        ledger_pools(&admin, "node1")
            .await
            .is_ok_and(|l| l.is_empty())
    })
    .await?;
    let mut get = scene.cp.kubectl();
    get.args(["-n", NS, "get", "msp", "-o", "name"]);
    assert_eq!(run(get).await?.trim(), "");
    scene.op.stop().await?;
    Ok(())
}

/// deploy/overlays/custom-policy/policy.wasm while it lives (the file is
/// gitignored: a built artefact); removed on drop, also when the test panics.
struct OverlayModule(PathBuf);

impl OverlayModule {
    fn put(bytes: &[u8]) -> std::io::Result<OverlayModule> {
        let path = deploy("overlays/custom-policy/policy.wasm");
        std::fs::write(&path, bytes)?;
        Ok(OverlayModule(path))
    }
}

impl Drop for OverlayModule {
    fn drop(&mut self) {
        // Already gone is fine; nothing else can be done about a failure here.
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policy_overlay_with_retain_keeps_the_pool_of_a_deleted_resource()
-> anyhow::Result<()> {
    if !require_loop_devices() {
        return Ok(());
    }
    let retain = bundled::built_component("retain").ok_or_else(|| {
        anyhow::anyhow!("the retain example was not built (MSP_POLICY_WASM set?)")
    })?;
    let module = std::fs::read(retain)?;
    let cp = ControlPlane::start().await?;
    let admin = cp.client().await?;
    {
        let _placed = OverlayModule::put(&module)?;
        apply_kustomization(&cp, "overlays/custom-policy").await?;
    }

    // The ConfigMap holds the module byte for byte, where the operator looks.
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), NS)
        .get(policy_watch::DEFAULT_NAME)
        .await?;
    let stored = cm
        .binary_data
        .unwrap_or_default()
        .remove(policy_watch::DEFAULT_KEY)
        .ok_or_else(|| anyhow::anyhow!("no binaryData key {}", policy_watch::DEFAULT_KEY))?;
    assert!(
        stored.0 == module,
        "stored module differs ({} vs {} bytes)",
        stored.0.len(),
        module.len()
    );

    wait_crd_served(&cp).await?;
    let scene = scene_as_service_account(cp, &admin).await?;
    let disk = LoopDevice::create(64 * MIB)?;
    kubectl_create(&scene.cp, &seed_pool_on(&disk.path_str())?)?;
    wait_pool(
        &admin,
        "my-new-pool",
        WAIT,
        "online, decided by msp-retain",
        |s| {
            s.state == Some(PoolState::Online)
                && s.policy
                    .as_deref()
                    .is_some_and(|p| p.starts_with("msp-retain@"))
        },
    )
    .await?;
    assert_eq!(
        node_pools(scene.sn.endpoint()).await?,
        vec!["my-new-pool".to_string()]
    );
    assert_eq!(
        ledger_pools(&admin, "node1").await?,
        vec!["my-new-pool".to_string()]
    );
    // The documented way to see the load: an Event about the ConfigMap.
    wait_for("a PolicyLoaded event about the ConfigMap", WAIT, || async {
        let mut events = scene.cp.kubectl();
        let selector = format!("involvedObject.name={}", policy_watch::DEFAULT_NAME);
        events.args(["-n", NS, "get", "events", "--field-selector", &selector]);
        run(events)
            .await
            .is_ok_and(|out| out.contains("PolicyLoaded"))
    })
    .await?;

    // The documented roll back: deleting the ConfigMap returns to the bundled
    // default, and every pool is decided again under it.
    let mut roll_back = scene.cp.kubectl();
    roll_back.args(["-n", NS, "delete", "configmap", policy_watch::DEFAULT_NAME]);
    run(roll_back).await?;
    wait_pool(
        &admin,
        "my-new-pool",
        WAIT,
        "decided by msp-default again",
        |s| {
            s.policy
                .as_deref()
                .is_some_and(|p| p.starts_with(&format!("{}@", msp_policy::decide::NAME)))
        },
    )
    .await?;
    // The documented way to ship a module without the overlay.
    let module_file = tempfile::Builder::new().suffix(".wasm").tempfile()?;
    std::fs::write(module_file.path(), &module)?;
    let from_file = format!(
        "--from-file={}={}",
        policy_watch::DEFAULT_KEY,
        module_file.path().display()
    );
    let mut render = scene.cp.kubectl();
    render.args([
        "-n",
        NS,
        "create",
        "configmap",
        policy_watch::DEFAULT_NAME,
        &from_file,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let rendered = run(render).await?;
    kubectl_stdin(&scene.cp, &["apply", "--server-side", "-f", "-"], &rendered)?;
    let status = wait_pool(
        &admin,
        "my-new-pool",
        WAIT,
        "decided by msp-retain again",
        |s| {
            s.policy
                .as_deref()
                .is_some_and(|p| p.starts_with("msp-retain@"))
        },
    )
    .await?;
    assert_eq!(status.state, Some(PoolState::Online));

    // Deleted: the operator forgets the pool (ledger entry gone) and leaves it on the node.
    let mut delete = scene.cp.kubectl();
    delete.args(["-n", NS, "delete", "msp", "my-new-pool"]);
    run(delete).await?;
    wait_for(
        "the deletion processed (ledger entry gone)",
        WAIT,
        || async {
            ledger_pools(&admin, "node1")
                .await
                .is_ok_and(|l| l.is_empty())
        },
    )
    .await?;
    assert_eq!(
        node_pools(scene.sn.endpoint()).await?,
        vec!["my-new-pool".to_string()],
        "retained pool must stay on the node (policy was {:?})",
        status.policy
    );
    scene.op.stop().await?;
    Ok(())
}
