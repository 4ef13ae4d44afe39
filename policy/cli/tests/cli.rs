//! `msp-policy check|eval|test|diff|bench` as a policy author runs them.

use std::process::Command;

use msp_policy_engine::{bundled, validate};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_msp-policy"))
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
    let out = bin().args(["check"]).arg(&file).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("PASS"), "{stdout}");
    assert!(stdout.contains("msp-default"), "{stdout}");
    assert!(stdout.contains("imports nothing"), "{stdout}");
    assert!(stdout.contains("contract:  0.3.0"), "{stdout}");
    for (old, version) in [("contract-0-1", "0.1.0"), ("contract-0-2", "0.2.0")] {
        let out = bin().args(["check"]).arg(built(old)).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!("contract:  {version}")),
            "{stdout}"
        );
    }
    Ok(())
}

#[test]
fn check_fails_with_a_reason_for_a_refused_module() -> anyhow::Result<()> {
    for (name, needle) in [
        ("hostile-wrong-version", "decider@1.0.0"),
        ("hostile-imports-wasi", "wasi:cli"),
    ] {
        let out = bin().args(["check"]).arg(built(name)).output()?;
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
    let mut obs =
        validate::conformance_case("deleted").ok_or_else(|| anyhow::anyhow!("no deleted case"))?;
    obs.in_ledger = true;
    let obs_file = dir.path().join("obs.json");
    std::fs::write(&obs_file, serde_json::to_vec(&obs)?)?;
    let out = bin()
        .args(["eval"])
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

/// The repository file `path` (from the workspace root).
fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn run(args: &[&std::ffi::OsStr]) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = bin().args(args).output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn test_passes_the_shipped_cases_of_the_default_and_of_retain() -> anyhow::Result<()> {
    let retain = built("retain");
    let keep = built("keep-labelled");
    for (policy, cases) in [
        (os("bundled"), repo_file("policy/tests/cases/default.yaml")),
        (
            retain.as_os_str(),
            repo_file("policy/examples/retain/cases.yaml"),
        ),
        (
            keep.as_os_str(),
            repo_file("policy/examples/keep-labelled/cases.yaml"),
        ),
    ] {
        let (code, stdout, stderr) = run(&[os("test"), policy, cases.as_os_str()])?;
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        let summary = stdout.lines().last().unwrap_or_default();
        assert!(
            summary.ends_with("passed, 0 failed") && !stdout.contains("FAIL"),
            "{stdout}"
        );
    }
    Ok(())
}

#[test]
fn test_fails_naming_the_case_with_expected_and_got() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n\
         \x20 - name: new pool is created\n\
         \x20   expect: {action: create}\n\
         \x20 - name: deleted pool is wrongly expected kept\n\
         \x20   start: online\n\
         \x20   observation: {pool: {deleted: true}}\n\
         \x20   expect: {action: retain, reasonContains: kept}\n",
    )?;
    let (code, stdout, _) = run(&[os("test"), os("bundled"), cases.as_os_str()])?;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("  ok    new pool is created"), "{stdout}");
    assert!(
        stdout.contains("  FAIL  deleted pool is wrongly expected kept"),
        "{stdout}"
    );
    assert!(
        stdout.contains("action: expected retain, got destroy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reason: expected to contain \"kept\", got \"resource deleted; destroying"),
        "{stdout}"
    );
    assert!(stdout.contains("2 cases: 1 passed, 1 failed"), "{stdout}");

    // Could not run: exit 2 and a message that says why.
    std::fs::write(
        &cases,
        "cases: [{name: x, observation: {inLedgr: true}, expect: {action: none}}]",
    )?;
    let (code, _, stderr) = run(&[os("test"), os("bundled"), cases.as_os_str()])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("inLedgr"), "{stderr}");
    let missing = dir.path().join("missing.yaml");
    let (code, _, stderr) = run(&[os("test"), os("bundled"), missing.as_os_str()])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");
    let refused = built("hostile-wrong-version");
    let (code, _, stderr) = run(&[
        os("test"),
        refused.as_os_str(),
        repo_file("policy/tests/cases/default.yaml").as_os_str(),
    ])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("would refuse"), "{stderr}");
    Ok(())
}

#[test]
fn diff_of_default_and_retain_finds_only_deleted_ledger_pools_kept() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let retain = built("retain");
    let (code, stdout, stderr) = run(&[
        os("diff"),
        os("bundled"),
        retain.as_os_str(),
        os("--count"),
        os("3000"),
        os("--examples"),
        dir.path().as_os_str(),
    ])?;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let groups: Vec<&str> = stdout.lines().filter(|l| l.starts_with("group ")).collect();
    assert!(
        groups
            .iter()
            .any(|g| g.contains(": action: destroy → retain (")),
        "{stdout}"
    );
    assert!(stdout.contains("ran in "), "{stdout}");
    for (i, group) in groups.iter().enumerate() {
        // Every difference is a deleted pool in the ledger kept instead of
        // whatever the default did with it.
        assert!(group.contains(" → retain ("), "{group}\n{stdout}");
        let example = dir.path().join(format!("{}.json", i + 1));
        let obs: msp_policy_sdk::model::Observation =
            serde_json::from_slice(&std::fs::read(&example)?)?;
        assert!(obs.pool.deleted && obs.in_ledger, "{group}: {obs:?}");
        let mut actions = Vec::new();
        for policy in [os("bundled"), retain.as_os_str()] {
            let out = bin()
                .args([os("eval"), policy, os("--observation"), example.as_os_str()])
                .output()?;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let d: msp_policy_sdk::model::Decision = serde_json::from_slice(&out.stdout)?;
            actions.push(d.action);
        }
        if group.contains("action: destroy → retain") {
            assert_eq!(
                actions,
                [
                    msp_policy_sdk::model::Action::Destroy,
                    msp_policy_sdk::model::Action::Retain
                ]
            );
        }
        assert_ne!(actions[0], actions[1], "{group}");
    }
    Ok(())
}

#[test]
fn diff_is_quiet_for_the_same_policy_and_repeatable_for_a_seed() -> anyhow::Result<()> {
    let retain = built("retain");
    let (code, stdout, _) = run(&[
        os("diff"),
        retain.as_os_str(),
        retain.as_os_str(),
        os("--count"),
        os("1000"),
    ])?;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("1000 generated observations (seed 1; labels: team; annotations: example.com/retain): no differences"),
        "{stdout}"
    );
    let stable = built("stable-disk-names");
    let diff = |seed: &str| {
        run(&[
            os("diff"),
            stable.as_os_str(),
            os("--against"),
            os("bundled"),
            os("--count"),
            os("1500"),
            os("--seed"),
            os(seed),
        ])
    };
    // The report without its last line, the run time.
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("ran in "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (code, first, _) = diff("7")?;
    assert_eq!(code, Some(1), "{first}");
    assert!(first.contains("group 1: "), "{first}");
    let (_, again, _) = diff("7")?;
    assert_eq!(body(&first), body(&again));
    let (_, other, _) = diff("8")?;
    assert_ne!(body(&first), body(&other));
    Ok(())
}

#[test]
fn test_refuses_a_case_the_operator_cannot_produce() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n\
         \x20 - name: a deleted resource that kept its status\n\
         \x20   start: online\n\
         \x20   observation: {pool: {deleted: true, statusState: online}}\n\
         \x20   expect: {action: retain}\n",
    )?;
    let (code, stdout, stderr) = run(&[os("test"), os("bundled"), cases.as_os_str()])?;
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("case 1") && stderr.contains("never makes this observation"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn diff_draws_the_keys_a_policys_cases_name() -> anyhow::Result<()> {
    // keep-labelled differs from the default only on a deleted resource
    // labelled keep=true: the generator's own keys never show it ...
    let keep = built("keep-labelled");
    let diff = |extra: &[&std::ffi::OsStr]| {
        let mut args = vec![
            os("diff"),
            keep.as_os_str(),
            os("--against"),
            os("bundled"),
            os("--count"),
            os("2000"),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, stdout, _) = diff(&[])?;
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("labels: team;"), "{stdout}");
    // ... its cases, or a flag, do.
    let cases = repo_file("policy/examples/keep-labelled/cases.yaml");
    for extra in [
        vec![os("--cases"), cases.as_os_str()],
        vec![os("--label"), os("keep=true")],
    ] {
        let (code, stdout, _) = diff(&extra)?;
        assert_eq!(code, Some(1), "{stdout}");
        assert!(
            stdout.contains("labels: keep, team;") && stdout.contains("action: destroy → retain"),
            "{stdout}"
        );
    }
    Ok(())
}

#[test]
fn bench_prints_percentiles() -> anyhow::Result<()> {
    let (code, stdout, stderr) = run(&[os("bench"), os("bundled"), os("--iterations"), os("500")])?;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for label in ["p50", "p99", "mean"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_default();
        let micros: f64 = line
            .trim_start()
            .trim_start_matches(label)
            .trim()
            .trim_end_matches("µs")
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{label} in {stdout:?}: {e}"))?;
        assert!(micros > 0.0, "{stdout}");
    }
    assert!(stdout.contains("failed decisions: none"), "{stdout}");
    Ok(())
}

#[test]
fn keygen_sign_verify_as_the_operator_would() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let module = path("policy.wasm");
    std::fs::write(&module, bundled::DEFAULT_COMPONENT)?;
    for who in ["release", "other"] {
        let (code, out, err) = run(&[
            os("keygen"),
            os("--secret-key"),
            os(&path(&format!("{who}.key"))),
            os("--public-key"),
            os(&path(&format!("{who}.pub"))),
        ])?;
        assert_eq!(code, Some(0), "{out}{err}");
    }
    // A key file is never overwritten.
    let (code, _, err) = run(&[
        os("keygen"),
        os("--secret-key"),
        os(&path("release.key")),
        os("--public-key"),
        os(&path("new.pub")),
    ])?;
    assert_eq!(code, Some(2), "{err}");

    let (code, out, err) = run(&[
        os("sign"),
        os(&module),
        os("--key"),
        os(&path("release.key")),
    ])?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(path("policy.wasm.sig").exists(), "{out}");
    assert_eq!(
        std::fs::read(&module)?,
        bundled::DEFAULT_COMPONENT,
        "the module is left as built"
    );

    let verify = |keys: &[&str], sig: Option<&std::path::Path>| {
        let mut args = vec![os("verify").to_owned(), module.clone().into_os_string()];
        for k in keys {
            args.push("--key".into());
            args.push(path(k).into_os_string());
        }
        if let Some(sig) = sig {
            args.push("--signature".into());
            args.push(sig.as_os_str().to_owned());
        }
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run(&refs)
    };
    let (code, out, err) = verify(&["other.pub", "release.pub"], None)?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("VERIFIED") && out.contains("release.pub"),
        "{out}"
    );

    let (code, _, err) = verify(&["other.pub"], None)?;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("signature-untrusted"), "{err}");

    let sig = std::fs::read(path("policy.wasm.sig"))?;
    std::fs::write(path("cut.sig"), &sig[..sig.len() - 3])?;
    let (code, _, err) = verify(&["release.pub"], Some(&path("cut.sig")))?;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("signature-malformed"), "{err}");

    let (code, _, err) = verify(&["release.pub"], Some(&path("none.sig")))?;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("signature-missing"), "{err}");

    std::fs::write(path("junk.pub"), "false")?;
    let (code, _, err) = verify(&["junk.pub"], None)?;
    assert_eq!(code, Some(2), "{err}");

    // A module the operator would refuse is not signed.
    let (code, _, err) = run(&[
        os("sign"),
        os(&built("hostile-wrong-version")),
        os("--key"),
        os(&path("release.key")),
        os("--output"),
        os(&path("hostile.sig")),
    ])?;
    assert_eq!(code, Some(1), "{err}");
    assert!(!path("hostile.sig").exists());
    Ok(())
}
