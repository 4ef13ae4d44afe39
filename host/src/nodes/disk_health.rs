//! Disk health: what the operator itself sees of a pool's disks, so that a
//! dead disk is never shown online.
//!
//! The pinned io-engine lists every lvs pool `online` whatever happens to
//! its disk (its ListPools state is a constant; a disk gone or read-only
//! shows only in its log and in I/O errors, and its stats carry no error
//! count: docs/wire.md). What it does report truthfully is the node's block
//! devices, read from sysfs and udev at each `ListBlockDevices`. So with
//! each pool list of a node (every `--node-sync-period`) the registry asks
//! for the node's devices once and checks every listed pool's disks here:
//!
//! - a disk not among the node's devices, or of size 0 (a loop device
//!   whose backing is gone, a disk whose media is gone): faulted;
//! - disks together smaller than the pool's capacity (the disk shrank
//!   under the pool): faulted.
//!
//! A finding only ever makes a pool's reported state worse, never better
//! (a node's own degraded or faulted stays). The engine exposes nothing that
//! tells a read-only or failing-but-present disk from a healthy one without
//! writing to it, so no finding here says degraded; see docs/wire.md.
//!
//! Only disks named by a kernel device path (`/dev/...`) are checked: a pool
//! on a file, on memory (`malloc:///`) or on an NVMe device the engine drives
//! itself (`pcie:///`, unbound from the kernel) is not among the node's
//! block devices by nature.

use crate::nodes::client::{BlockDeviceInfo, NodePool, PoolHealth, disk_path};

/// Something wrong with a pool's disks that its node did not report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Degraded or faulted.
    pub state: PoolHealth,
    /// Why, naming the disk, for the admin.
    pub reason: String,
}

/// The node's device that `disk` (a path as the pool records it: the
/// resource's spec, the ledger entry, the node's report) is, by its kernel
/// name or one of its udev links.
///
/// This is where a disk is matched to a device: a pinned identity (the
/// ledger's record of the disk's persistent links) replaces the path match
/// here, for the create check and for health alike.
pub fn locate<'a>(disk: &str, devices: &'a [BlockDeviceInfo]) -> Option<&'a BlockDeviceInfo> {
    let path = disk_path(disk);
    devices
        .iter()
        .find(|d| d.devname == path || d.devlinks.contains(&path))
}

/// True when `disk` is a kernel block device the node must list.
pub fn checkable(disk: &str) -> bool {
    disk_path(disk).starts_with("/dev/")
}

/// True when one of `pools` has a disk worth asking the node about.
pub fn needs_devices(pools: &[NodePool]) -> bool {
    pools.iter().any(|p| p.disks.iter().any(|d| checkable(d)))
}

/// What is wrong with `pool`'s disks given the node's `devices`; `None` when
/// nothing is seen wrong.
pub fn verdict(pool: &NodePool, devices: &[BlockDeviceInfo]) -> Option<Finding> {
    let mut reasons = Vec::new();
    // Bytes of the disks, when every disk is a checked, listed device.
    let mut bytes = Some(0u64);
    for disk in &pool.disks {
        if !checkable(disk) {
            bytes = None;
            continue;
        }
        match locate(disk, devices) {
            None => {
                bytes = None;
                reasons.push(format!(
                    "disk {disk} is no longer among the node's block devices (removed, or its \
                     name moved)"
                ));
            }
            Some(dev) if dev.size == 0 => {
                reasons.push(format!(
                    "disk {disk} has size 0 on the node (its media or backing file is gone)"
                ));
            }
            Some(dev) => bytes = bytes.map(|b| b.saturating_add(dev.size.saturating_mul(512))),
        }
    }
    if reasons.is_empty()
        && let Some(bytes) = bytes
        && bytes > 0
        && bytes < pool.capacity
    {
        reasons.push(format!(
            "disk {} is smaller ({bytes} bytes) than the pool on it ({} bytes): it shrank",
            pool.disks.join(", "),
            pool.capacity
        ));
    }
    (!reasons.is_empty()).then(|| Finding {
        state: PoolHealth::Faulted,
        reason: format!(
            "{} (seen by the operator in the node's block devices; the storage node itself still \
             lists the pool)",
            reasons.join("; ")
        ),
    })
}

/// Every listed pool's finding, by pool name (pools with none are absent).
pub fn findings(
    pools: &[NodePool],
    devices: &[BlockDeviceInfo],
) -> std::collections::BTreeMap<String, Finding> {
    pools
        .iter()
        .filter_map(|p| verdict(p, devices).map(|f| (p.name.clone(), f)))
        .collect()
}

/// The findings that hold after a pool list: `fresh` when the node listed
/// its devices; when it could not, the `last` ones (a disk seen gone is not
/// taken back on no evidence), in both cases only for pools still listed.
pub fn carry(
    last: std::collections::BTreeMap<String, Finding>,
    fresh: Option<std::collections::BTreeMap<String, Finding>>,
    pools: &[NodePool],
) -> std::collections::BTreeMap<String, Finding> {
    let mut kept = fresh.unwrap_or(last);
    kept.retain(|name, _| pools.iter().any(|p| &p.name == name));
    kept
}

/// How bad a reported state is: a finding replaces only a better one.
fn severity(state: PoolHealth) -> u8 {
    match state {
        PoolHealth::Online => 0,
        PoolHealth::Unknown => 1,
        PoolHealth::Degraded => 2,
        PoolHealth::Faulted => 3,
    }
}

/// Makes each pool's reported state the worse of the node's and the
/// operator's finding for it.
pub fn apply(pools: &mut [NodePool], findings: &std::collections::BTreeMap<String, Finding>) {
    for pool in pools {
        if let Some(f) = findings.get(&pool.name)
            && severity(f.state) > severity(pool.state)
        {
            pool.state = f.state;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const MIB_SECTORS: u64 = 2048;

    fn dev(name: &str, size: u64) -> BlockDeviceInfo {
        BlockDeviceInfo {
            devname: name.into(),
            size,
            available: true,
            ..Default::default()
        }
    }

    fn pool(name: &str, disks: &[&str], capacity: u64) -> NodePool {
        NodePool {
            name: name.into(),
            disks: disks.iter().map(|d| d.to_string()).collect(),
            state: PoolHealth::Online,
            capacity,
            used: 0,
            replicas: None,
        }
    }

    #[test]
    fn a_listed_disk_of_its_size_is_healthy() {
        let p = pool("p", &["/dev/loop1"], 120 * 1024 * 1024);
        assert_eq!(verdict(&p, &[dev("/dev/loop1", 128 * MIB_SECTORS)]), None);
        // By a udev link, and as the engine reports the disk.
        let mut d = dev("/dev/sdb", 128 * MIB_SECTORS);
        d.devlinks = vec!["/dev/disk/by-id/wwn-1".into()];
        let by_id = pool("p", &["/dev/disk/by-id/wwn-1"], 1);
        assert_eq!(verdict(&by_id, std::slice::from_ref(&d)), None);
        let uri = pool("p", &["aio:///dev/sdb?uuid=1"], 1);
        assert_eq!(verdict(&uri, &[d]), None);
    }

    #[test]
    fn a_disk_gone_from_the_node_faults_the_pool() {
        let p = pool("p", &["/dev/loop1"], 1);
        let f = verdict(&p, &[dev("/dev/loop2", MIB_SECTORS)]).expect("finding");
        assert_eq!(f.state, PoolHealth::Faulted);
        assert!(
            f.reason
                .contains("disk /dev/loop1 is no longer among the node's block devices"),
            "{}",
            f.reason
        );
        // No devices at all (a node listing nothing) is no exception.
        assert!(verdict(&p, &[]).is_some());
    }

    #[test]
    fn a_disk_of_size_0_faults_the_pool() {
        let p = pool("p", &["/dev/loop1"], 100);
        let f = verdict(&p, &[dev("/dev/loop1", 0)]).expect("finding");
        assert_eq!(f.state, PoolHealth::Faulted);
        assert!(
            f.reason.contains("disk /dev/loop1 has size 0"),
            "{}",
            f.reason
        );
    }

    #[test]
    fn a_disk_smaller_than_its_pool_faults_it() {
        let p = pool("p", &["/dev/loop1"], 120 * 1024 * 1024);
        let f = verdict(&p, &[dev("/dev/loop1", 64 * MIB_SECTORS)]).expect("finding");
        assert_eq!(f.state, PoolHealth::Faulted);
        assert!(f.reason.contains("shrank"), "{}", f.reason);
        // Several disks count together (the stand-in's pools).
        let two = pool("p", &["/dev/loop1", "/dev/loop2"], 120 * 1024 * 1024);
        let devs = [
            dev("/dev/loop1", 64 * MIB_SECTORS),
            dev("/dev/loop2", 64 * MIB_SECTORS),
        ];
        assert_eq!(verdict(&two, &devs), None);
    }

    #[test]
    fn disks_the_kernel_does_not_list_are_not_checked() {
        for disk in [
            "malloc:///m?size_mb=8",
            "pcie:///0000:01:00.0",
            "aio:///var/lib/disk.img",
        ] {
            let p = pool("p", &[disk], u64::MAX);
            assert_eq!(verdict(&p, &[]), None, "{disk}");
            assert!(!needs_devices(&[p]), "{disk}");
        }
        // A pool with a file and a device: the device is checked, the sizes
        // are not compared (the file's is unknown).
        let mixed = pool("p", &["/var/lib/disk.img", "/dev/loop1"], u64::MAX);
        assert!(needs_devices(std::slice::from_ref(&mixed)));
        assert_eq!(verdict(&mixed, &[dev("/dev/loop1", 1)]), None);
        assert!(verdict(&mixed, &[]).is_some());
    }

    #[test]
    fn a_finding_only_makes_a_state_worse() {
        let finding = |state| Finding {
            state,
            reason: "r".into(),
        };
        let mut pools = vec![
            pool("a", &["/dev/loop1"], 1),
            pool("b", &["/dev/loop2"], 1),
            pool("c", &["/dev/loop3"], 1),
        ];
        pools[1].state = PoolHealth::Faulted;
        pools[2].state = PoolHealth::Unknown;
        let mut found = BTreeMap::new();
        found.insert("a".to_string(), finding(PoolHealth::Faulted));
        found.insert("b".to_string(), finding(PoolHealth::Degraded));
        apply(&mut pools, &found);
        let states: Vec<_> = pools.iter().map(|p| p.state).collect();
        assert_eq!(
            states,
            vec![
                PoolHealth::Faulted,
                PoolHealth::Faulted,
                PoolHealth::Unknown
            ]
        );
    }

    #[test]
    fn findings_name_only_the_pools_with_one() {
        let pools = [
            pool("ok", &["/dev/loop1"], 1),
            pool("gone", &["/dev/loop9"], 1),
        ];
        let found = findings(&pools, &[dev("/dev/loop1", MIB_SECTORS)]);
        assert_eq!(found.keys().collect::<Vec<_>>(), vec!["gone"]);
    }
}
