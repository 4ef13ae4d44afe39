//! Example custom policy `stable-disk-names`: the default policy, except that a
//! pool not created yet stays pending when a disk is named by a kernel name
//! that can change across reboots (/dev/sdb, /dev/nvme0n1, /dev/vdc …) instead
//! of a stable one (/dev/disk/by-id/…, by-path, by-uuid …). Pools already
//! created are left to the default policy: renaming cannot move them.

use msp_policy_sdk::model::{Decision, Observation, PolicyInfo};

pub const NAME: &str = "msp-stable-disk-names";

pub fn info() -> PolicyInfo {
    PolicyInfo {
        name: NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Kernel device names whose numbering depends on probe order.
const UNSTABLE_PREFIXES: [&str; 6] = [
    "/dev/sd",
    "/dev/vd",
    "/dev/hd",
    "/dev/xvd",
    "/dev/nvme",
    "/dev/loop",
];

/// True when `disk` (a path or a URI such as aio:///dev/sdb) uses a kernel name.
pub fn is_unstable(disk: &str) -> bool {
    let path = disk.split_once("://").map_or(disk, |(_, rest)| rest);
    let path = path.split('?').next().unwrap_or(path);
    UNSTABLE_PREFIXES.iter().any(|p| path.starts_with(p))
}

pub fn decide(obs: &Observation) -> Decision {
    if !obs.pool.deleted && !msp_policy::decide::was_created(obs) {
        let unstable: Vec<&str> = obs
            .pool
            .spec_disks
            .iter()
            .map(String::as_str)
            .filter(|d| is_unstable(d))
            .collect();
        if !unstable.is_empty() {
            return msp_policy::decide::pending(format!(
                "disk names {} can change across reboots: use a stable name such as \
                 /dev/disk/by-id/… (delete and recreate the resource with it)",
                unstable.join(", ")
            ));
        }
    }
    msp_policy::decide(obs)
}

#[cfg(target_arch = "wasm32")]
msp_policy_sdk::export_policy!(crate::info, crate::decide);

#[cfg(test)]
mod tests {
    use super::*;
    use msp_policy_sdk::model::*;

    #[test]
    fn kernel_names_are_unstable_and_by_id_is_not() {
        for d in [
            "/dev/sdb",
            "/dev/nvme0n1",
            "/dev/vdc",
            "aio:///dev/sdb?uuid=1",
        ] {
            assert!(is_unstable(d), "{d}");
        }
        for d in [
            "/dev/disk/by-id/wwn-0x5000",
            "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
            "/dev/mapper/x",
        ] {
            assert!(!is_unstable(d), "{d}");
        }
    }

    #[test]
    fn new_pool_on_sdb_stays_pending_with_a_reason() {
        let mut o = Observation {
            pools_known: true,
            ..Default::default()
        };
        o.node = K8sNode {
            exists: true,
            mayastor_enabled: true,
        };
        o.storage_node = StorageNode {
            registered: true,
            heartbeat_age_ms: Some(0),
            reachable: true,
            endpoint: String::new(),
        };
        o.pool.spec_disks = vec!["/dev/sdb".into()];
        let d = decide(&o);
        assert_eq!((d.action, d.state), (Action::None, PoolState::Pending));
        assert!(d.reason.contains("/dev/sdb") && d.reason.contains("/dev/disk/by-id"));
        o.pool.spec_disks = vec!["/dev/disk/by-id/ata-x".into()];
        assert_eq!(decide(&o).action, Action::Create);
    }
}
