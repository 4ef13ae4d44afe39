//! The committed CRD must be exactly what `msp-operator crdgen` generates from
//! the Rust types, so that the manifests users apply never drift from the code.

use std::path::Path;

#[test]
fn committed_crd_matches_generated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crd/mayastorpool.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = msp_operator::state::crd::crd_yaml().expect("render CRD");
    assert!(
        committed == generated,
        "deploy/crd/mayastorpool.yaml is stale; regenerate it with \
         `cargo run -p msp-operator -- crdgen --output deploy/crd/mayastorpool.yaml`"
    );
}

#[test]
fn crd_names_and_schema_follow_the_seed() {
    use kube::CustomResourceExt;
    let crd = msp_operator::state::crd::MayastorPool::crd();
    assert_eq!(crd.spec.group, "openebs.io");
    assert_eq!(crd.spec.names.kind, "MayastorPool");
    assert_eq!(crd.spec.names.plural, "mayastorpools");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["msp".to_string()][..])
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );

    let schema = serde_json::to_value(version.schema.as_ref().expect("schema")).expect("json");
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .expect("spec.required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        required.contains(&"node") && required.contains(&"disks"),
        "{required:?}"
    );
    let status = &schema["openAPIV3Schema"]["properties"]["status"]["properties"];
    for field in ["state", "node", "disks", "reason"] {
        assert!(status.get(field).is_some(), "status.{field} missing");
    }
    let states: Vec<&str> = status["state"]["enum"]
        .as_array()
        .expect("state enum")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        states,
        ["pending", "online", "degraded", "faulted", "offline"]
    );

    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .expect("printer columns")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Node", "State", "Capacity", "Used", "Replicas", "Age"]
    );
}

#[test]
fn disk_pattern_accepts_dev_paths_and_refuses_escapes() {
    let re = regex_lite::Regex::new(msp_operator::state::crd::DISK_PATH_PATTERN).expect("pattern");
    for ok in [
        "/dev/loop0",
        "/dev/disk/by-id/nvme-Samsung_SSD_970_S1",
        "/dev/...x",
        "/dev/.hidden",
    ] {
        assert!(re.is_match(ok), "{ok} should be accepted");
    }
    for bad in [
        "dev/loop0",
        "/dev",
        "/dev/",
        "/tmp/disk",
        "/dev/../etc/passwd",
        "/dev/./loop0",
        "/dev//loop0",
        "/dev/loop0/",
        "/devx/loop0",
    ] {
        assert!(!re.is_match(bad), "{bad} should be refused");
    }
}
