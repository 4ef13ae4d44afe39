//! What `deploy/monitoring/` gives Prometheus and Grafana. The alert rules
//! (`alerts.yaml`) with the real promtool
//! (built by `tests/promtool/build.sh`): `promtool check rules` passes; every
//! alert has its test file `tests/monitoring/ALERT.test.yaml` with a case where
//! it fires and one where it stays silent, and `promtool test rules` passes
//! each; a test file whose firing case is emptied fails (so these tests can
//! fail); every metric the rules query is one the operator exports; each
//! alert has a runbook line in deploy/README.md. The Grafana dashboard
//! (`dashboard.json`) is valid JSON whose every query names only exported
//! metrics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use msp_tests::docs;
use msp_tests::go_tools::required_go_tool;
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn alerts_file() -> PathBuf {
    Path::new(ROOT).join("deploy/monitoring/alerts.yaml")
}

fn tests_dir() -> PathBuf {
    Path::new(ROOT).join("tests/monitoring")
}

fn yaml(path: &Path) -> anyhow::Result<Value> {
    Ok(serde_saphyr::from_str(&std::fs::read_to_string(path)?)?)
}

/// The rules of every group of the alerts file.
fn rules() -> anyhow::Result<Vec<Value>> {
    let file = yaml(&alerts_file())?;
    let mut rules = Vec::new();
    for group in file["groups"].as_array().into_iter().flatten() {
        rules.extend(group["rules"].as_array().into_iter().flatten().cloned());
    }
    anyhow::ensure!(!rules.is_empty(), "no rules in {}", alerts_file().display());
    Ok(rules)
}

fn alert_names() -> anyhow::Result<Vec<String>> {
    Ok(rules()?
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect())
}

/// `promtool ARGS`: (success, stdout and stderr).
fn promtool(promtool: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(promtool).args(args).output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test]
async fn promtool_checks_the_rules() -> anyhow::Result<()> {
    let Some(promtool_bin) = required_go_tool("promtool").await else {
        return Ok(());
    };
    let (ok, out) = promtool(
        &promtool_bin,
        &[
            "check".as_ref(),
            "rules".as_ref(),
            alerts_file().as_os_str(),
        ],
    )?;
    assert!(ok, "promtool check rules: {out}");
    let rules = alert_names()?.len();
    assert!(
        out.contains(&format!("SUCCESS: {rules} rules found")),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn every_alert_fires_and_stays_silent_in_its_promtool_test() -> anyhow::Result<()> {
    let Some(promtool_bin) = required_go_tool("promtool").await else {
        return Ok(());
    };
    let alerts = alert_names()?;
    // One test file per alert, and no file for an alert that is gone.
    let files: BTreeSet<String> = std::fs::read_dir(tests_dir())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".test.yaml").map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = alerts.iter().cloned().collect();
    assert_eq!(
        files, expected,
        "tests/monitoring/ALERT.test.yaml per alert"
    );

    for alert in &alerts {
        let path = tests_dir().join(format!("{alert}.test.yaml"));
        let test = yaml(&path)?;
        let cases: Vec<&Value> = test["tests"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
            .filter(|c| c["alertname"] == alert.as_str())
            .collect();
        let fires = |c: &&Value| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
        assert!(cases.iter().any(fires), "{alert}: no case where it fires");
        assert!(
            cases.iter().any(|c| !fires(c)),
            "{alert}: no case where it stays silent"
        );
        let (ok, out) = promtool(
            &promtool_bin,
            &["test".as_ref(), "rules".as_ref(), path.as_os_str()],
        )?;
        assert!(ok, "promtool test rules {}: {out}", path.display());

        // The same file expecting silence where it fires must fail: the
        // test discriminates.
        let mut broken = test.clone();
        for t in broken["tests"].as_array_mut().into_iter().flatten() {
            for c in t["alert_rule_test"].as_array_mut().into_iter().flatten() {
                if c["alertname"] == alert.as_str() {
                    c["exp_alerts"] = Value::Array(Vec::new());
                }
            }
        }
        let dir = tempfile::tempdir()?;
        let copy = dir.path().join(format!("{alert}.test.yaml"));
        let mut broken_yaml = serde_saphyr::to_string(&broken)?;
        // rule_files are relative to the test file: point at the real one.
        broken_yaml = broken_yaml.replace(
            "../../deploy/monitoring/alerts.yaml",
            &alerts_file().to_string_lossy(),
        );
        std::fs::write(&copy, broken_yaml)?;
        let (ok, out) = promtool(
            &promtool_bin,
            &["test".as_ref(), "rules".as_ref(), copy.as_os_str()],
        )?;
        assert!(
            !ok,
            "{alert}: expecting silence where it fires passed: {out}"
        );
    }
    Ok(())
}

/// The `msp_…` metric names a PromQL expression queries.
fn metrics_in(expr: &str, out: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("msp_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
}

/// Every metric name the operator's exposition may have (a counter's
/// `_total`, a histogram's `_bucket`, `_sum`, `_count`).
fn exported_samples() -> BTreeSet<String> {
    docs::exported_metrics(&docs::exposition_with_every_family())
        .into_iter()
        .flat_map(|(_, samples)| samples)
        .collect()
}

#[test]
fn every_metric_the_alerts_query_is_exported() -> anyhow::Result<()> {
    let mut queried = BTreeSet::new();
    for rule in rules()? {
        metrics_in(rule["expr"].as_str().unwrap_or_default(), &mut queried);
    }
    assert!(queried.len() >= 5, "{queried:?}");
    let exported = exported_samples();
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(unknown.is_empty(), "queried but not exported: {unknown:?}");
    Ok(())
}

#[test]
fn the_dashboard_is_json_and_queries_only_exported_metrics() -> anyhow::Result<()> {
    let path = Path::new(ROOT).join("deploy/monitoring/dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let panels = dashboard["panels"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{}: no panels", path.display()))?;
    let exported = exported_samples();
    let mut all = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().into_iter().flatten();
        let mut queried = BTreeSet::new();
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{}: a target without expr", panel["title"]))?;
            metrics_in(expr, &mut queried);
        }
        assert!(!queried.is_empty(), "{}: queries no metric", panel["title"]);
        let unknown: Vec<&String> = queried.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{}: {unknown:?} not exported",
            panel["title"]
        );
        all.extend(queried);
    }
    // What the dashboard is for: states, transitions, registrations, the
    // latency of each step, policy decisions.
    for needed in [
        "msp_pool_state",
        "msp_registrations_refused_total",
        "msp_reconcile_step_seconds_bucket",
        "msp_policy_decision_failures_total",
        "msp_policy_shadow_disagreements_total",
    ] {
        assert!(all.contains(needed), "the dashboard does not show {needed}");
    }
    Ok(())
}

#[test]
fn every_alert_has_a_runbook_line() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("deploy/README.md"))?;
    let section = readme
        .split("\n## Alerts\n")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("deploy/README.md has no \"## Alerts\" section"))?;
    let section = section.split("\n## ").next().unwrap_or(section);
    for alert in alert_names()? {
        assert!(
            section
                .lines()
                .any(|l| l.starts_with(&format!("| `{alert}`"))),
            "no runbook row for {alert} in deploy/README.md, Alerts"
        );
    }
    for rule in rules()? {
        assert_eq!(
            rule["annotations"]["runbook_url"], "deploy/README.md#alerts",
            "{}",
            rule["alert"]
        );
    }
    Ok(())
}
