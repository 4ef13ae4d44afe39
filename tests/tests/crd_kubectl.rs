//! The MayastorPool CRD against a real kube-apiserver, driven by the real
//! kubectl: the seed's three commands exactly as written, `kubectl explain`,
//! schema validation (invalid pools refused with the field named, edge cases
//! accepted) and RBAC with a restricted identity.
//!
//! Each test starts its own control plane (see `msp_tests::control_plane`).

use std::process::{Command, Output, Stdio};

use msp_tests::control_plane::ControlPlane;
use tokio::io::AsyncWriteExt;

/// The seed's "Create a storage pool" command, verbatim.
const SEED_CREATE: &str = r#"cat <<EOF | kubectl create -f -
apiVersion: "openebs.io/v1alpha1"
kind: MayastorPool
metadata:
  name: my-new-pool
  namespace: mayastor
spec:
  node: node1
  disks: ["/dev/loop0"]
EOF
"#;
/// The seed's "List storage pools" command, verbatim.
const SEED_LIST: &str = "kubectl -n mayastor get msp";
/// The seed's "Destroy storage pool" command, verbatim.
const SEED_DESTROY: &str = "kubectl -n mayastor delete msp my-new-pool";

/// A control plane with the CRD Established, or None (after a loud notice)
/// when this machine cannot have the binaries and CI is not set.
async fn start() -> anyhow::Result<Option<ControlPlane>> {
    let what = "etcd, kube-apiserver and kubectl (KUBEBUILDER_ASSETS, or Go to build them)";
    if !msp_tests::require(what, ControlPlane::binaries_available().await) {
        return Ok(None);
    }
    let cp = ControlPlane::start().await?;
    cp.apply_crd().await?;
    Ok(Some(cp))
}

/// [`start`], plus namespace `mayastor`.
async fn cluster() -> anyhow::Result<Option<ControlPlane>> {
    let Some(cp) = start().await? else {
        return Ok(None);
    };
    let mut namespace = cp.kubectl();
    namespace.args(["create", "namespace", "mayastor"]);
    msp_tests::control_plane::run(namespace).await?;
    Ok(Some(cp))
}

/// Runs `script` in bash as a storage admin would type it: `kubectl` on PATH
/// is the real one and `KUBECONFIG` points at the test cluster's admin.
async fn shell(cp: &ControlPlane, script: &str) -> anyhow::Result<Output> {
    let mut command = Command::new("bash");
    command.args(["-c", script]).envs(cp.shell_env());
    finish(command, None).await
}

/// Runs a command to completion (feeding `stdin` if given) without blocking the runtime.
async fn finish(command: Command, stdin: Option<&str>) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::from(command);
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
    }
    Ok(child.wait_with_output().await?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kubectl create -f -` of `manifest` in namespace mayastor, as `cp`'s admin.
async fn create(cp: &ControlPlane, manifest: &str) -> anyhow::Result<Output> {
    let mut command = cp.kubectl();
    command.args(["create", "-f", "-"]);
    finish(command, Some(manifest)).await
}

fn pool(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: openebs.io/v1alpha1\nkind: MayastorPool\nmetadata:\n  name: {name}\n  namespace: mayastor\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn seed_commands_create_list_and_destroy_a_pool() -> anyhow::Result<()> {
    let Some(cp) = cluster().await? else {
        return Ok(());
    };

    let created = shell(&cp, SEED_CREATE).await?;
    assert!(
        created.status.success(),
        "create failed: {}",
        text(&created.stderr)
    );
    assert_eq!(
        text(&created.stdout).trim(),
        "mayastorpool.openebs.io/my-new-pool created"
    );

    let listed = shell(&cp, SEED_LIST).await?;
    assert!(
        listed.status.success(),
        "get failed: {}",
        text(&listed.stderr)
    );
    let stdout = text(&listed.stdout);
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "NODE", "STATE", "CAPACITY", "USED", "REPLICAS", "AGE"
        ],
        "output:\n{stdout}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 1, "output:\n{stdout}");
    // No operator runs here, so status is empty: State, Capacity, Used and
    // Replicas are blank.
    assert_eq!(rows[0][..2], ["my-new-pool", "node1"], "output:\n{stdout}");
    assert_eq!(
        rows[0].len(),
        3,
        "expected NAME NODE AGE values only, got:\n{stdout}"
    );
    assert!(rows[0][2].ends_with('s'), "age column: {stdout}");

    // The resource holds exactly what the heredoc said.
    let mut get = cp.kubectl();
    get.args([
        "-n",
        "mayastor",
        "get",
        "msp",
        "my-new-pool",
        "-o",
        "jsonpath={.spec.node} {.spec.disks}",
    ]);
    let spec = msp_tests::control_plane::run(get).await?;
    assert_eq!(spec, r#"node1 ["/dev/loop0"]"#);

    let deleted = shell(&cp, SEED_DESTROY).await?;
    assert!(
        deleted.status.success(),
        "delete failed: {}",
        text(&deleted.stderr)
    );
    assert_eq!(
        text(&deleted.stdout).trim(),
        r#"mayastorpool.openebs.io "my-new-pool" deleted from mayastor namespace"#
    );

    let after = shell(&cp, SEED_LIST).await?;
    assert!(
        after.status.success(),
        "get failed: {}",
        text(&after.stderr)
    );
    assert_eq!(text(&after.stdout), "", "the pool is still listed");
    assert_eq!(
        text(&after.stderr).trim(),
        "No resources found in mayastor namespace."
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_explain_describes_the_fields() -> anyhow::Result<()> {
    let Some(cp) = start().await? else {
        return Ok(());
    };
    let explained = shell(&cp, "kubectl explain msp.spec.disks").await?;
    assert!(
        explained.status.success(),
        "explain failed: {}",
        text(&explained.stderr)
    );
    let stdout = text(&explained.stdout);
    assert!(stdout.contains("KIND:       MayastorPool"), "{stdout}");
    assert!(stdout.contains("FIELD: disks <[]string>"), "{stdout}");
    // The Rust doc comment of MayastorPoolSpec::disks, reflowed by kubectl:
    // it recommends persistent links (issue 26 item 4).
    let flat = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(
            "Disks that make up the pool: absolute paths to device files under /dev, each \
             listed once. Name them by a persistent link such as /dev/disk/by-id/...: a kernel \
             name (/dev/sdX, /dev/nvmeXnY, /dev/loopN, /dev/vdX) can name another disk after a \
             reboot."
        ),
        "{stdout}"
    );
    let node = shell(&cp, "kubectl explain msp.spec.node").await?;
    let flat = text(&node.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flat.contains("Name of the Kubernetes node where the pool is created."),
        "{flat}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_pools_are_refused_naming_the_field() -> anyhow::Result<()> {
    let Some(cp) = cluster().await? else {
        return Ok(());
    };
    // (what is wrong, spec, field and rule the API server must name)
    const NODE_RULE: &str = "spec.node: Invalid value: \"string\": must be a Kubernetes node name";
    const DISK_RULE: &str = "spec.disks[0]: Invalid value: \"string\": must not contain whitespace";
    let long_node = format!("  node: {}\n  disks: [\"/dev/loop0\"]\n", "a".repeat(254));
    let cases = [
        ("no disks", "  node: node1\n", "spec.disks: Required value"),
        (
            "no node",
            "  disks: [\"/dev/loop0\"]\n",
            "spec.node: Required value",
        ),
        (
            "empty disk list",
            "  node: node1\n  disks: []\n",
            "spec.disks: Invalid value",
        ),
        (
            "relative path",
            "  node: node1\n  disks: [\"loop0\"]\n",
            "spec.disks[0]: Invalid value: \"loop0\"",
        ),
        (
            "outside /dev",
            "  node: node1\n  disks: [\"/tmp/disk.img\"]\n",
            "spec.disks[0]: Invalid value: \"/tmp/disk.img\"",
        ),
        (
            "dot-dot escape",
            "  node: node1\n  disks: [\"/dev/../etc/passwd\"]\n",
            "spec.disks[0]: Invalid value: \"/dev/../etc/passwd\"",
        ),
        (
            "dot segment",
            "  node: node1\n  disks: [\"/dev/./loop0\"]\n",
            "spec.disks[0]: Invalid value: \"/dev/./loop0\"",
        ),
        (
            "/dev itself",
            "  node: node1\n  disks: [\"/dev/\"]\n",
            "spec.disks[0]: Invalid value: \"/dev/\"",
        ),
        (
            "prefix look-alike",
            "  node: node1\n  disks: [\"/devices/loop0\"]\n",
            "spec.disks[0]: Invalid value: \"/devices/loop0\"",
        ),
        (
            "duplicate disk",
            "  node: node1\n  disks: [\"/dev/loop0\", \"/dev/loop0\"]\n",
            "spec.disks[1]: Duplicate value: \"/dev/loop0\"",
        ),
        (
            "empty node",
            "  node: \"\"\n  disks: [\"/dev/loop0\"]\n",
            "spec.node: Invalid value: \"\"",
        ),
        (
            "disks as a string",
            "  node: node1\n  disks: /dev/loop0\n",
            "spec.disks: Invalid value: \"string\"",
        ),
        (
            "node as a number",
            "  node: 42\n  disks: [\"/dev/loop0\"]\n",
            "spec.node: Invalid value: \"integer\"",
        ),
        (
            "disk as a number",
            "  node: node1\n  disks: [7]\n",
            "spec.disks[0]: Invalid value: \"integer\"",
        ),
        (
            "upper-case node",
            "  node: Node1\n  disks: [\"/dev/loop0\"]\n",
            NODE_RULE,
        ),
        (
            "non-ASCII node",
            "  node: nödé\n  disks: [\"/dev/loop0\"]\n",
            NODE_RULE,
        ),
        (
            "node with a trailing space",
            "  node: \"node1 \"\n  disks: [\"/dev/loop0\"]\n",
            NODE_RULE,
        ),
        (
            "node ending in a dot",
            "  node: node1.\n  disks: [\"/dev/loop0\"]\n",
            NODE_RULE,
        ),
        (
            "node longer than 253",
            long_node.as_str(),
            "spec.node: Too long",
        ),
        (
            "NUL in a disk path",
            "  node: node1\n  disks: [\"/dev/loop0\\u0000\"]\n",
            DISK_RULE,
        ),
        (
            "tab in a disk path",
            "  node: node1\n  disks: [\"/dev/loop\\t0\"]\n",
            DISK_RULE,
        ),
        (
            "space in a disk path",
            "  node: node1\n  disks: [\"/dev/sdb\", \"/dev/my disk\"]\n",
            "spec.disks[1]: Invalid value: \"string\": must not contain whitespace",
        ),
        (
            "no-break space in a disk path",
            "  node: node1\n  disks: [\"/dev/sdb\\u00a0\"]\n",
            DISK_RULE,
        ),
    ];
    assert!(cases.len() >= 8);
    let mut failures = Vec::new();
    for (i, (what, spec, field)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let out = create(&cp, &pool(&name, spec)).await?;
        let stderr = text(&out.stderr);
        if out.status.success() {
            failures.push(format!("{what}: accepted ({})", text(&out.stdout).trim()));
        } else if !(stderr.contains("is invalid") && stderr.contains(field)) {
            failures.push(format!(
                "{what}: refused without naming `{field}`: {}",
                stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing of the above was stored.
    let mut list = cp.kubectl();
    list.args(["-n", "mayastor", "get", "msp", "-o", "name"]);
    assert_eq!(msp_tests::control_plane::run(list).await?, "");
    Ok(())
}

#[tokio::test]
async fn valid_edge_cases_are_accepted() -> anyhow::Result<()> {
    let Some(cp) = cluster().await? else {
        return Ok(());
    };
    let cases = [
        (
            "by-id",
            "  node: node1\n  disks: [\"/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_1TB_S467NX0M123456\"]\n",
        ),
        (
            "several",
            "  node: worker-2.example.com\n  disks: [\"/dev/sdb\", \"/dev/sdc\", \"/dev/disk/by-path/pci-0000:00:1f.2-ata-1\"]\n",
        ),
        (
            "dotted",
            "  node: node1\n  disks: [\"/dev/mapper/.hidden\", \"/dev/..data\", \"/dev/vg0/lv.0\"]\n",
        ),
    ];
    for (what, spec) in cases {
        let out = create(&cp, &pool(&format!("ok-{what}"), spec)).await?;
        assert!(
            out.status.success(),
            "{what} refused: {}",
            text(&out.stderr)
        );
    }
    let mut get = cp.kubectl();
    get.args([
        "-n",
        "mayastor",
        "get",
        "msp",
        "ok-several",
        "-o",
        "jsonpath={.spec.disks}",
    ]);
    assert_eq!(
        msp_tests::control_plane::run(get).await?,
        r#"["/dev/sdb","/dev/sdc","/dev/disk/by-path/pci-0000:00:1f.2-ata-1"]"#
    );
    Ok(())
}

#[tokio::test]
async fn restricted_identities_get_only_what_rbac_grants() -> anyhow::Result<()> {
    let Some(cp) = cluster().await? else {
        return Ok(());
    };
    for args in [
        &[
            "create",
            "clusterrole",
            "msp-viewer",
            "--verb=get,list,watch",
            "--resource=mayastorpools.openebs.io",
        ][..],
        &[
            "-n",
            "mayastor",
            "create",
            "rolebinding",
            "viewers",
            "--clusterrole=msp-viewer",
            "--group=msp-viewers",
        ],
        &[
            "-n",
            "mayastor",
            "create",
            "rolebinding",
            "operator",
            "--clusterrole=msp-viewer",
            "--serviceaccount=mayastor:msp-operator",
        ],
    ] {
        let mut command = cp.kubectl();
        command.args(args);
        msp_tests::control_plane::run(command).await?;
    }
    let created = shell(&cp, SEED_CREATE).await?;
    assert!(
        created.status.success(),
        "admin create failed: {}",
        text(&created.stderr)
    );

    // The API server sees the minted user and every group, not just the first.
    let alice = cp.identity("alice", &["team-a", "msp-viewers"])?;
    let mut whoami = cp.kubectl_as(&alice);
    whoami.args([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert_eq!(
        msp_tests::control_plane::run(whoami).await?,
        r#"alice ["team-a","msp-viewers","system:authenticated"]"#
    );

    let mut list = cp.kubectl_as(&alice);
    list.args(["-n", "mayastor", "get", "msp", "-o", "name"]);
    assert_eq!(
        msp_tests::control_plane::run(list).await?.trim(),
        "mayastorpool.openebs.io/my-new-pool"
    );

    let refused = {
        let mut command = cp.kubectl_as(&alice);
        command.args(["create", "-f", "-"]);
        finish(
            command,
            Some(&pool(
                "alices-pool",
                "  node: node1\n  disks: [\"/dev/loop1\"]\n",
            )),
        )
        .await?
    };
    assert!(!refused.status.success(), "a viewer created a pool");
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("Forbidden"), "{stderr}");
    assert!(
        stderr.contains(
            r#"User "alice" cannot create resource "mayastorpools" in API group "openebs.io""#
        ),
        "{stderr}"
    );

    // Someone in no bound group may not even list.
    let mallory = cp.identity("mallory", &["team-b"])?;
    let mut list = cp.kubectl_as(&mallory);
    list.args(["-n", "mayastor", "get", "msp"]);
    let out = finish(list, None).await?;
    assert!(
        !out.status.success() && text(&out.stderr).contains("Forbidden"),
        "{}",
        text(&out.stderr)
    );

    // The service account form matches a RoleBinding to the ServiceAccount, through the kube client.
    let operator = cp.service_account("mayastor", "msp-operator")?;
    let client = operator.client().await?;
    let pools: kube::Api<msp_operator::state::crd::MayastorPool> =
        kube::Api::namespaced(client, "mayastor");
    let listed = pools.list(&Default::default()).await?;
    assert_eq!(listed.items.len(), 1);
    let delete = pools.delete("my-new-pool", &Default::default()).await;
    assert!(
        matches!(&delete, Err(kube::Error::Api(status)) if status.code == 403),
        "the service account deleted a pool: {delete:?}"
    );
    Ok(())
}

/// Removes every `x-kubernetes-validations` from a CRD: the schema as it was
/// before the node-name and disk-character rules.
fn strip_rules(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_rules);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_rules),
        _ => {}
    }
}

#[tokio::test]
async fn resources_stored_before_the_rules_keep_working() -> anyhow::Result<()> {
    use kube::CustomResourceExt;
    use kube::api::{Api, Patch, PatchParams};
    use msp_operator::state::crd::MayastorPool;

    let what = "etcd, kube-apiserver and kubectl (KUBEBUILDER_ASSETS, or Go to build them)";
    if !msp_tests::require(what, ControlPlane::binaries_available().await) {
        return Ok(());
    }
    let cp = ControlPlane::start().await?;
    let mut before = serde_json::to_value(MayastorPool::crd())?;
    strip_rules(&mut before);
    let old_crd = cp.dir().join("crd-before-rules.json");
    std::fs::write(&old_crd, serde_json::to_vec(&before)?)?;
    cp.apply_crd_from(&old_crd).await?;
    let mut namespace = cp.kubectl();
    namespace.args(["create", "namespace", "mayastor"]);
    msp_tests::control_plane::run(namespace).await?;
    let legacy = "  node: Node1\n  disks: [\"/dev/my disk\"]\n";
    let out = create(&cp, &pool("legacy", legacy)).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The rules arrive (an operator upgrade): the stored resource still takes
    // the operator's status writes and the admin's metadata edits.
    cp.apply_crd().await?;
    let admin = cp.client().await?;
    let api: Api<MayastorPool> = Api::namespaced(admin, "mayastor");
    let status = serde_json::json!({
        "apiVersion": "openebs.io/v1alpha1",
        "kind": "MayastorPool",
        "status": {"state": "pending", "reason": "Kubernetes node \"Node1\" does not exist"},
    });
    api.patch_status(
        "legacy",
        &PatchParams::apply("msp-operator").force(),
        &Patch::Apply(&status),
    )
    .await?;
    let out = shell(&cp, "kubectl -n mayastor label msp legacy team=storage").await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Changing the field itself meets the rule.
    let out = shell(
        &cp,
        r#"kubectl -n mayastor patch msp legacy --type merge -p '{"spec":{"node":"Node2"}}'"#,
    )
    .await?;
    assert!(
        !out.status.success(),
        "an invalid new node name was accepted"
    );
    assert!(
        text(&out.stderr).contains("must be a Kubernetes node name"),
        "{}",
        text(&out.stderr)
    );
    let stored = api.get("legacy").await?;
    assert_eq!(stored.spec.node, "Node1");
    assert_eq!(
        stored.status.and_then(|s| s.state),
        Some(msp_operator::state::crd::PoolState::Pending)
    );
    Ok(())
}
