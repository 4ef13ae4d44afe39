//! The Helm chart (`deploy/helm/msp-operator`) with the real helm (built by
//! `tests/helm/build.sh`) and the real kubectl's kustomize: `helm lint`
//! passes; the default render is, object by object, what
//! `kubectl kustomize deploy/base` builds (the one source of truth, so the two
//! never drift), and with the io-engine on, what `deploy/overlays/io-engine`
//! builds; every value reaches the operator as flags it accepts; a typo in
//! values is refused by values.schema.json; the opt-in policy ConfigMap and
//! PrometheusRule carry what they are given.
//!
//! `MSP_DEPLOY_DIR` compares the chart with the kustomizations of another
//! checkout's `deploy/` (e.g. one being merged); by default this one's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use msp_operator::lifecycle::run::RunArgs;
use msp_tests::go_tools::{kubectl, required_go_tool};
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/helm/msp-operator");
const NS: &str = "mayastor";

/// The deploy/ directory whose kustomizations the chart must equal.
fn kustomize_root() -> PathBuf {
    std::env::var_os("MSP_DEPLOY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEPLOY))
}

/// Runs `cmd`; its stdout, or an error with its stderr.
fn output(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The objects of a multi-document YAML stream (empty documents dropped),
/// [`normalised`].
fn objects(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for value in serde_saphyr::from_multiple::<Value>(yaml)? {
        if !value.is_null() {
            out.push(normalised(value));
        }
    }
    Ok(out)
}

/// `value` with whole floats as integers: kustomize writes the CRD's
/// `minimum: 0.0` as `0`, helm passes its crds/ through as written.
fn normalised(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(normalised).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalised(v))).collect())
        }
        other => other,
    }
}

/// Where `a` and `b` differ, as paths in the object with both values.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let null = Value::Null;
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                differences(va, vb, &format!("{path}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(va, vb, &format!("{path}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: chart {a}, kustomize {b}")),
        _ => {}
    }
}

/// An object's identity: apiVersion, kind, namespace, name.
fn key(object: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    format!(
        "{} {} {}/{}",
        s(&object["apiVersion"]),
        s(&object["kind"]),
        s(&object["metadata"]["namespace"]),
        s(&object["metadata"]["name"])
    )
}

/// Objects by identity; a duplicate identity is an error.
fn by_key(objects: Vec<Value>) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut map = BTreeMap::new();
    for object in objects {
        let k = key(&object);
        anyhow::ensure!(map.insert(k.clone(), object).is_none(), "{k} twice");
    }
    Ok(map)
}

/// `helm template` of the chart as release msp-operator in `namespace`, with
/// the CRDs and `args`.
fn helm_template(helm: &Path, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(helm);
    cmd.args([
        "template",
        "msp-operator",
        CHART,
        "--include-crds",
        "--namespace",
        namespace,
    ])
    .args(args);
    output(cmd)
}

/// `kubectl kustomize` of `deploy/<dir>` (of [`kustomize_root`]).
fn kustomize(kubectl: &Path, dir: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new(kubectl);
    cmd.arg("kustomize").arg(kustomize_root().join(dir));
    output(cmd)
}

/// The chart's render against a kustomization: equal object by object, except
/// the Namespace, which the chart never owns (`helm install
/// --create-namespace`, or an existing one), so the kustomization's must be
/// the release's. Each difference is shown by its path in the object.
fn assert_render_equals(rendered: &str, kustomized: &str) -> anyhow::Result<()> {
    let chart = by_key(objects(rendered)?)?;
    let mut kustomize = by_key(objects(kustomized)?)?;
    let namespace = kustomize
        .remove(&format!("v1 Namespace /{NS}"))
        .ok_or_else(|| anyhow::anyhow!("the kustomization has no Namespace {NS}"))?;
    assert_eq!(namespace["metadata"]["name"], NS);
    let mut found = Vec::new();
    for k in chart
        .keys()
        .chain(kustomize.keys().filter(|k| !chart.contains_key(*k)))
    {
        match (chart.get(k), kustomize.get(k)) {
            (Some(a), Some(b)) => differences(a, b, k, &mut found),
            (Some(_), None) => found.push(format!("{k}: only in the chart")),
            (None, _) => found.push(format!("{k}: only in the kustomization")),
        }
    }
    assert!(
        found.is_empty(),
        "chart and kustomization differ:\n{}",
        found.join("\n")
    );
    Ok(())
}

/// The one object of `kind` named `name` in a render.
fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("no {kind} {name} in the render"))
}

#[tokio::test]
async fn helm_lint_passes() -> anyhow::Result<()> {
    let Some(helm) = required_go_tool("helm").await else {
        return Ok(());
    };
    let mut lint = Command::new(&helm);
    lint.args(["lint", "--strict", CHART]);
    let out = output(lint)?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // With every opt-in on as well.
    let mut lint = Command::new(&helm);
    lint.args(["lint", "--strict", CHART])
        .args([
            "--set",
            "ioEngine.enabled=true",
            "--set",
            "prometheusRule.enabled=true",
        ])
        .args([
            "--set",
            "customPolicy.enabled=true",
            "--set",
            "customPolicy.wasmBase64=AGFzbQ==",
        ]);
    let out = output(lint)?;
    assert!(out.contains("0 chart(s) failed"), "{out}");
    Ok(())
}

#[tokio::test]
async fn default_render_equals_deploy_base() -> anyhow::Result<()> {
    let Some(helm) = required_go_tool("helm").await else {
        return Ok(());
    };
    let kubectl = kubectl().await?;
    let rendered = helm_template(&helm, NS, &[])?;
    assert_render_equals(&rendered, &kustomize(&kubectl, "base")?)?;
    // Nothing opt-in is there by default.
    for kind in ["DaemonSet", "ConfigMap", "PrometheusRule"] {
        assert!(
            !objects(&rendered)?.iter().any(|o| o["kind"] == kind),
            "a {kind} by default"
        );
    }
    Ok(())
}

#[tokio::test]
async fn io_engine_render_equals_the_io_engine_overlay() -> anyhow::Result<()> {
    let Some(helm) = required_go_tool("helm").await else {
        return Ok(());
    };
    let kubectl = kubectl().await?;
    let rendered = helm_template(&helm, NS, &["--set", "ioEngine.enabled=true"])?;
    assert_render_equals(&rendered, &kustomize(&kubectl, "overlays/io-engine")?)
}

#[tokio::test]
async fn values_reach_the_operator_as_flags_it_accepts() -> anyhow::Result<()> {
    let Some(helm) = required_go_tool("helm").await else {
        return Ok(());
    };
    let values = tempfile::NamedTempFile::new()?;
    std::fs::write(
        values.path(),
        r#"
watchNamespace: pools
image: {repository: registry.example/msp-operator, tag: "0.2.0", pullPolicy: Always}
replicas: 3
resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 512Mi}}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: storage, operator: In, values: ["yes"]}]}]}}}
priorityClassName: system-cluster-critical
log: {format: text, level: debug}
leaderElection: {leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s}
poolListPeriod: 15s
"#,
    )?;
    let path = values.path().to_string_lossy().into_owned();
    let rendered = objects(&helm_template(&helm, "storage", &["-f", &path])?)?;
    let deployment = object(&rendered, "Deployment", "msp-operator")?;
    assert_eq!(deployment["metadata"]["namespace"], "storage");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(
        pod["tolerations"][0]["key"],
        "node-role.kubernetes.io/control-plane"
    );
    assert!(
        pod["affinity"]["podAntiAffinity"].is_null(),
        "affinity replaced"
    );
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "storage"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/msp-operator:0.2.0");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"]["requests"]["cpu"], "100m");
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    // Helm merges maps with the defaults (null removes a key).
    assert_eq!(container["resources"]["limits"]["cpu"], "1");
    let rust_log = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "RUST_LOG")
        .map(|e| e["value"].clone());
    assert_eq!(rust_log, Some(Value::from("debug")));

    // The operator's own flag parser reads what the chart passes.
    let args: Vec<String> = serde_json::from_value(container["args"].clone())?;
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let run = RunArgs::from_flags(&args[1..]).map_err(|e| anyhow::anyhow!("{args:?}: {e}"))?;
    assert_eq!(run.namespace, "pools");
    assert_eq!(run.lease_duration, std::time::Duration::from_secs(30));
    assert_eq!(run.renew_deadline, std::time::Duration::from_secs(20));
    assert_eq!(run.retry_period, std::time::Duration::from_secs(4));
    assert_eq!(run.node_sync_period, std::time::Duration::from_secs(15));
    assert_eq!(format!("{:?}", run.log_format).to_lowercase(), "text");

    // Every namespaced object is in the release's namespace, the
    // ServiceAccount bound is the release's.
    for o in &rendered {
        let cluster_scoped = [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ];
        if !cluster_scoped.contains(&o["kind"].as_str().unwrap_or("")) {
            assert_eq!(o["metadata"]["namespace"], "storage", "{}", key(o));
        }
    }
    let binding = object(&rendered, "ClusterRoleBinding", "msp-operator")?;
    assert_eq!(binding["subjects"][0]["namespace"], "storage");

    // The io-engine registers with the Service of the release's namespace.
    let with_engine = objects(&helm_template(
        &helm,
        "storage",
        &["--set", "ioEngine.enabled=true"],
    )?)?;
    let ds = object(&with_engine, "DaemonSet", "msp-io-engine")?;
    let engine_args = ds["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        engine_args.contains("-Rhttp://msp-operator.storage.svc:50051"),
        "{engine_args}"
    );
    Ok(())
}

#[tokio::test]
async fn a_values_typo_is_refused_by_the_schema() -> anyhow::Result<()> {
    let Some(helm) = required_go_tool("helm").await else {
        return Ok(());
    };
    for (set, named) in [
        ("replica=3", "replica"),
        ("image.pullpolicy=Always", "pullpolicy"),
        ("log.format=yaml", "format"),
        ("leaderElection.leaseDuration=1m30s", "leaseDuration"),
        ("ioEngine.enable=true", "enable"),
        ("prometheusrule.enabled=true", "prometheusrule"),
    ] {
        let mut template = Command::new(&helm);
        template.args(["template", "msp-operator", CHART, "--set", set]);
        let out = template.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains("schema") && stderr.contains(named),
            "--set {set}: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn opt_in_policy_configmap_and_prometheus_rule_carry_what_they_are_given()
-> anyhow::Result<()> {
    let Some(helm) = required_go_tool("helm").await else {
        return Ok(());
    };
    // A custom policy: the module, under binaryData, in the ConfigMap the
    // operator watches.
    let wasm = "AGFzbQ0AAQA=";
    let rendered = objects(&helm_template(
        &helm,
        NS,
        &[
            "--set",
            "customPolicy.enabled=true",
            "--set",
            &format!("customPolicy.wasmBase64={wasm}"),
        ],
    )?)?;
    let cm = object(&rendered, "ConfigMap", "msp-policy")?;
    assert_eq!(cm["metadata"]["namespace"], NS);
    assert_eq!(cm["binaryData"]["policy.wasm"], wasm);
    assert!(cm["data"].is_null());
    // Enabled without a module is an error, not an empty policy.
    let mut template = Command::new(&helm);
    template.args([
        "template",
        "msp-operator",
        CHART,
        "--set",
        "customPolicy.enabled=true",
    ]);
    let out = template.output()?;
    assert!(
        !out.status.success(),
        "a custom policy without a module rendered"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("customPolicy.wasmBase64"));

    // The PrometheusRule is deploy/monitoring/alerts.yaml, with the labels asked for.
    let rendered = objects(&helm_template(
        &helm,
        NS,
        &[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.labels.release=kube-prometheus-stack",
        ],
    )?)?;
    let rule = object(&rendered, "PrometheusRule", "msp-operator")?;
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let alerts: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        Path::new(DEPLOY).join("monitoring/alerts.yaml"),
    )?)?;
    assert_eq!(rule["spec"], alerts);
    assert!(
        rule["spec"]["groups"][0]["rules"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "no rules"
    );
    Ok(())
}
