//! Builds the policy components the host embeds or tests with.
//!
//! The default policy (`policy/` with the `export-default` feature) is built
//! for wasm32-unknown-unknown by a nested cargo, wrapped into a component with
//! `wit-component` and embedded by `bundled`. Example and hostile
//! policies are built the same way for the tests; their paths reach the code as
//! `MSP_POLICY_COMPONENT_<NAME>` compile-time variables.
//!
//! The nested cargo must not share the outer target dir and profile (it would
//! wait forever on the outer build's lock) and must not inherit the outer
//! rustflags or target. `MSP_POLICY_WASM=/path/to/component.wasm` skips all of
//! this and embeds a prebuilt default (examples are then not available).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates built in the second cargo call, and the names tests know them by.
const EXTRA: &[(&str, &str)] = &[
    ("msp-policy-first", "FIRST"),
    ("msp-policy-retain", "RETAIN"),
    ("msp-policy-keep-labelled", "KEEP_LABELLED"),
    ("msp-policy-stable-disk-names", "STABLE_DISK_NAMES"),
    // Built against the frozen 0.1.0 WIT, not the SDK.
    ("msp-policy-contract-0-1", "CONTRACT_0_1"),
    // Built against the frozen 0.2.0 WIT, not the SDK.
    ("msp-policy-contract-0-2", "CONTRACT_0_2"),
    ("msp-hostile-misbehave", "HOSTILE_MISBEHAVE"),
    ("msp-hostile-fails-self-test", "HOSTILE_FAILS_SELF_TEST"),
    ("msp-hostile-wrong-version", "HOSTILE_WRONG_VERSION"),
    ("msp-hostile-wrong-world", "HOSTILE_WRONG_WORLD"),
    ("msp-hostile-imports-wasi", "HOSTILE_IMPORTS_WASI"),
];

fn main() {
    if let Err(e) = run() {
        eprintln!("building the policy components failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    // The workspace root: this crate is host/engine.
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .ok_or("host/engine/ has no workspace root above it")?
        .to_path_buf();
    let bundled = out.join("msp_policy.component.wasm");

    println!("cargo:rerun-if-env-changed=MSP_POLICY_WASM");
    if let Some(prebuilt) = std::env::var_os("MSP_POLICY_WASM") {
        println!("cargo:rerun-if-changed={}", Path::new(&prebuilt).display());
        std::fs::copy(&prebuilt, &bundled)?;
        for (_, name) in EXTRA {
            println!("cargo:rustc-env=MSP_POLICY_COMPONENT_{name}=");
            println!("cargo:rustc-env=MSP_POLICY_CORE_{name}=");
        }
        return Ok(());
    }

    for p in [
        "wit",
        "policy/src",
        "policy/sdk",
        "policy/Cargo.toml",
        "policy/examples",
        "policy/hostile",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    let wasm_target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-policy"),
        None => out.join("wasm-policy"),
    };

    // Separate target dirs: the default policy's crate is built with the
    // export feature, the examples link it without; sharing a dir would let
    // one build overwrite the other's msp_policy.wasm.
    let core = nested_build(
        &root,
        &wasm_target.join("default"),
        &["-p", "msp-policy", "--features", "export-default"],
    )?;
    encode(&core.join("msp_policy.wasm"), &bundled)?;

    let mut args = Vec::new();
    for (krate, _) in EXTRA {
        args.extend(["-p", krate]);
    }
    let core = nested_build(&root, &wasm_target.join("examples"), &args)?;
    for (krate, name) in EXTRA {
        let file = format!("{}.wasm", krate.replace('-', "_"));
        let dest = out.join(format!("{}.component.wasm", krate.replace('-', "_")));
        encode(&core.join(&file), &dest)?;
        println!(
            "cargo:rustc-env=MSP_POLICY_COMPONENT_{name}={}",
            dest.display()
        );
        // The core module too, for the test of `policy componentize`.
        println!(
            "cargo:rustc-env=MSP_POLICY_CORE_{name}={}",
            core.join(&file).display()
        );
    }
    Ok(())
}

/// Runs `cargo build --release --target wasm32-unknown-unknown ARGS` in a
/// clean environment; returns the directory holding the core modules.
fn nested_build(
    root: &Path,
    target_dir: &Path,
    args: &[&str],
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--quiet",
        ])
        .args(args)
        .env("CARGO_TARGET_DIR", target_dir)
        // Small and fast guests; keep the name section for trap backtraces.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    if std::env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true") {
        cmd.arg("--offline");
    }
    // Anything on the build script's stdout would be read as a directive.
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("nested cargo {args:?} failed: {status} (is the wasm32-unknown-unknown target installed? `rustup target add wasm32-unknown-unknown`)").into());
    }
    Ok(target_dir.join("wasm32-unknown-unknown").join("release"))
}

/// Wraps a core module (carrying its WIT in a custom section) into a component.
fn encode(core: &Path, dest: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let module = std::fs::read(core).map_err(|e| format!("reading {}: {e}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .map_err(|e| format!("{}: {e:#}", core.display()))?
        .encode()
        .map_err(|e| format!("encoding {}: {e:#}", core.display()))?;
    // Write only on change so dependents are not rebuilt for nothing; to a
    // new file renamed over the old one, so that a reader (or another target
    // directory sharing the file by a hard link) never sees half a component
    // or another build's.
    if std::fs::read(dest).ok().as_deref() != Some(component.as_slice()) {
        let partial = dest.with_extension("wasm.partial");
        std::fs::write(&partial, component)?;
        std::fs::rename(&partial, dest)?;
    }
    Ok(())
}
