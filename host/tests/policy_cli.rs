//! `msp-operator policy check|eval` as a policy author runs them.

use std::process::Command;

use msp_policy_engine::{bundled, validate};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_msp-operator"))
}

fn built(name: &str) -> std::path::PathBuf {
    let path = bundled::built_component(name);
    assert!(
        path.is_some(),
        "component {name} was not built (MSP_POLICY_WASM set?)"
    );
    path.unwrap_or_default()
}

#[test]
fn check_passes_a_good_module_and_prints_its_identity() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("default.wasm");
    std::fs::write(&file, bundled::DEFAULT_COMPONENT)?;
    let out = bin().args(["policy", "check"]).arg(&file).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("PASS"), "{stdout}");
    assert!(stdout.contains("msp-default"), "{stdout}");
    assert!(stdout.contains("imports nothing"), "{stdout}");
    assert!(stdout.contains("contract:  0.2.0"), "{stdout}");
    let out = bin()
        .args(["policy", "check"])
        .arg(built("contract-0-1"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("contract:  0.1.0"), "{stdout}");
    Ok(())
}

#[test]
fn check_fails_with_a_reason_for_a_refused_module() -> anyhow::Result<()> {
    for (name, needle) in [
        ("hostile-wrong-version", "decider@1.0.0"),
        ("hostile-imports-wasi", "wasi:cli"),
    ] {
        let out = bin().args(["policy", "check"]).arg(built(name)).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} passed");
        assert!(
            stderr.contains("FAIL") && stderr.contains(needle),
            "{name}: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn eval_prints_the_decision_as_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, mut obs) = validate::conformance_observations()
        .into_iter()
        .find(|(c, _)| *c == "deleted")
        .ok_or_else(|| anyhow::anyhow!("no deleted case"))?;
    obs.in_ledger = true;
    let obs_file = dir.path().join("obs.json");
    std::fs::write(&obs_file, serde_json::to_vec(&obs)?)?;
    let out = bin()
        .args(["policy", "eval"])
        .arg(built("retain"))
        .arg("--observation")
        .arg(&obs_file)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decision: msp_policy_sdk::model::Decision = serde_json::from_slice(&out.stdout)?;
    assert_eq!(decision.action, msp_policy_sdk::model::Action::Retain);
    Ok(())
}
