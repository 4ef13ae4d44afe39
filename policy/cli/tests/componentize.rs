//! `msp-policy componentize`: an author's core module becomes the
//! component the operator loads, byte for byte what the project's own build
//! makes of it.

use std::process::Command;

use msp_policy_engine::bundled;

#[test]
fn the_core_module_of_the_sdk_example_becomes_its_component() -> anyhow::Result<()> {
    let core = bundled::built_core("first");
    assert!(
        core.is_some(),
        "examples were not built (MSP_POLICY_WASM set?)"
    );
    let core = core.unwrap_or_default();
    let built = bundled::built_component("first").unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("first.wasm");
    let out = Command::new(env!("CARGO_BIN_EXE_msp-policy"))
        .args(["componentize"])
        .arg(&core)
        .arg("-o")
        .arg(&out_path)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("msp-first"), "{stdout}");
    assert_eq!(std::fs::read(&out_path)?, std::fs::read(built)?);

    // A component is not wrapped again: the author hears why.
    let out = Command::new(env!("CARGO_BIN_EXE_msp-policy"))
        .args(["componentize"])
        .arg(&out_path)
        .arg("-o")
        .arg(dir.path().join("twice.wasm"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("already a component"),
        "{stderr}"
    );
    Ok(())
}
