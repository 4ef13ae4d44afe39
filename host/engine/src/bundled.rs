//! The policy components built by `build.rs`: the bundled default, embedded in
//! the binary, and (for tests, benchmarks and the docs' examples) the paths of
//! the example and hostile components built beside it.

use std::path::PathBuf;

/// The default policy as a wasm component.
pub const DEFAULT_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/msp_policy.component.wasm"));

/// Path of a component built with this crate: `retain`, `keep-labelled`, `stable-disk-names`,
/// `contract-0-1` and `contract-0-2` (built against the 0.1.0 and 0.2.0 contracts), `hostile-misbehave`, `hostile-wrong-version`, `hostile-wrong-world`,
/// `hostile-imports-wasi`. None for another name, or when the build used a
/// prebuilt default (`MSP_POLICY_WASM`) and built no examples.
pub fn built_component(name: &str) -> Option<PathBuf> {
    let path = match name {
        "first" => env!("MSP_POLICY_COMPONENT_FIRST"),
        "retain" => env!("MSP_POLICY_COMPONENT_RETAIN"),
        "keep-labelled" => env!("MSP_POLICY_COMPONENT_KEEP_LABELLED"),
        "stable-disk-names" => env!("MSP_POLICY_COMPONENT_STABLE_DISK_NAMES"),
        "contract-0-1" => env!("MSP_POLICY_COMPONENT_CONTRACT_0_1"),
        "contract-0-2" => env!("MSP_POLICY_COMPONENT_CONTRACT_0_2"),
        "hostile-misbehave" => env!("MSP_POLICY_COMPONENT_HOSTILE_MISBEHAVE"),
        "hostile-fails-self-test" => env!("MSP_POLICY_COMPONENT_HOSTILE_FAILS_SELF_TEST"),
        "hostile-wrong-version" => env!("MSP_POLICY_COMPONENT_HOSTILE_WRONG_VERSION"),
        "hostile-wrong-world" => env!("MSP_POLICY_COMPONENT_HOSTILE_WRONG_WORLD"),
        "hostile-imports-wasi" => env!("MSP_POLICY_COMPONENT_HOSTILE_IMPORTS_WASI"),
        _ => return None,
    };
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The core module (before `componentize`) of example `name`, where it is
/// kept for the test of `policy componentize`.
pub fn built_core(name: &str) -> Option<PathBuf> {
    let path = match name {
        "first" => env!("MSP_POLICY_CORE_FIRST"),
        _ => return None,
    };
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The bytes of a component [`built_component`] names, or why there are none
/// (for tests and benchmarks).
pub fn read_built(name: &str) -> std::io::Result<Vec<u8>> {
    let path = built_component(name).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("component {name} was not built (unknown name, or MSP_POLICY_WASM set)"),
        )
    })?;
    std::fs::read(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
}
