//! Disk safety: no disk holding data is formatted, whatever the storage node.
//!
//! The real io-engine's CreatePool makes a new pool on a disk that carries no
//! pool of its own, even over a filesystem. So before every CreatePool that
//! may create (not only import) a pool, the operator asks the node which
//! block devices it has and refuses, with a reason naming what it found,
//! when a disk of the pool
//! - carries a filesystem or another signature the node recognises (ext4,
//!   an LVM physical volume, swap, ...),
//! - is mounted,
//! - has partitions (a partition table in use),
//! - is reported unavailable (in use) by the node,
//! - or is not among the devices the node lists, or the node cannot be
//!   asked: it cannot tell, and the operator does not guess.
//!
//! `malloc:///` disks are memory the node makes up on the spot, and hold
//! nothing to lose: they are not checked.

use crate::nodes::client::BlockDeviceInfo;

/// What to tell the admin, appended to each refusal.
const ADVICE: &str = "the operator never lets a node format a disk that holds data; if the data \
                      is not needed, wipe the disk (wipefs -a) and the pool is created, or name \
                      another disk";

/// Why the disks of a new pool must not be formatted, or `None` when all of
/// them look empty and unused to the node that reported `devices`.
pub fn refusal(disks: &[String], devices: &[BlockDeviceInfo]) -> Option<String> {
    let problems: Vec<String> = disks
        .iter()
        .filter_map(|disk| problem(disk, devices))
        .collect();
    (!problems.is_empty()).then(|| format!("{}; {ADVICE}", problems.join("; ")))
}

/// The refusal when the node could not say which devices it has.
pub fn unknown(disks: &[String], error: &str) -> String {
    format!(
        "the node could not list its block devices ({error}), so it cannot tell whether {} \
         holds data; {ADVICE}",
        disks.join(", ")
    )
}

/// True when some disk needs looking at (not all are exempt), so the node
/// must be asked.
pub fn needs_check(disks: &[String]) -> bool {
    disks.iter().any(|d| !exempt(d))
}

/// True when `disk` names something that holds no data to lose.
fn exempt(disk: &str) -> bool {
    disk.starts_with("malloc://")
}

fn problem(disk: &str, devices: &[BlockDeviceInfo]) -> Option<String> {
    if exempt(disk) {
        return None;
    }
    let Some(dev) = crate::nodes::disk_identity::resolve(disk, devices) else {
        return Some(format!(
            "disk {disk} is not among the block devices the node lists, so it cannot tell what \
             the disk holds"
        ));
    };
    let mut found = Vec::new();
    match dev.fstype.as_deref() {
        Some("LVM2_member") => found.push("an LVM physical volume (LVM2_member)".to_string()),
        Some(fs) if !fs.is_empty() => found.push(format!("a filesystem ({fs})")),
        Some(_) if dev.mountpoints.is_empty() => {
            found.push("a filesystem of unknown type".to_string())
        }
        _ => {}
    }
    if !dev.mountpoints.is_empty() {
        found.push(format!("is mounted at {}", dev.mountpoints.join(", ")));
    }
    let partitions: Vec<&str> = devices
        .iter()
        .filter(|d| d.partition_parent.as_deref() == Some(dev.devname.as_str()))
        .map(|d| d.devname.as_str())
        .collect();
    if !partitions.is_empty() {
        found.push(format!(
            "a partition table with partitions {}",
            partitions.join(", ")
        ));
    }
    if found.is_empty() && !dev.available {
        found.push("is in use as far as the node can tell (reported unavailable)".to_string());
    }
    if found.is_empty() {
        return None;
    }
    let name = if dev.devname == disk {
        disk.to_string()
    } else {
        format!("{disk} ({})", dev.devname)
    };
    let what = found
        .iter()
        .map(|f| {
            if f.starts_with("is ") {
                f.clone()
            } else {
                format!("holds {f}")
            }
        })
        .collect::<Vec<_>>()
        .join(" and ");
    Some(format!("disk {name} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str) -> BlockDeviceInfo {
        BlockDeviceInfo {
            devname: name.into(),
            available: true,
            ..Default::default()
        }
    }

    fn disks(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_empty_listed_disk_passes() {
        assert_eq!(refusal(&disks(&["/dev/loop1"]), &[dev("/dev/loop1")]), None);
        // As the engine reports it, and by a udev link.
        let mut d = dev("/dev/loop1");
        d.devlinks = vec!["/dev/disk/by-id/x".into()];
        assert_eq!(
            refusal(&disks(&["aio:///dev/loop1?uuid=1"]), &[d.clone()]),
            None
        );
        assert_eq!(refusal(&disks(&["/dev/disk/by-id/x"]), &[d]), None);
        assert_eq!(refusal(&disks(&["malloc:///m?size_mb=8"]), &[]), None);
        assert!(!needs_check(&disks(&["malloc:///m?size_mb=8"])));
        assert!(needs_check(&disks(&["malloc:///m", "/dev/loop1"])));
    }

    #[test]
    fn data_is_named() {
        let mut ext4 = dev("/dev/loop1");
        ext4.fstype = Some("ext4".into());
        ext4.available = false;
        let why = refusal(&disks(&["/dev/loop1"]), &[ext4]).expect("refused");
        assert!(
            why.contains("disk /dev/loop1 holds a filesystem (ext4)"),
            "{why}"
        );
        assert!(why.contains("wipefs"), "{why}");

        let mut pv = dev("/dev/loop1");
        pv.fstype = Some("LVM2_member".into());
        let why = refusal(&disks(&["/dev/loop1"]), &[pv]).expect("refused");
        assert!(why.contains("LVM physical volume"), "{why}");

        let mut mounted = dev("/dev/loop1");
        mounted.fstype = Some(String::new());
        mounted.mountpoints = vec!["/mnt/x".into()];
        let why = refusal(&disks(&["/dev/loop1"]), &[mounted]).expect("refused");
        assert!(why.contains("is mounted at /mnt/x"), "{why}");

        let mut part = dev("/dev/loop1p1");
        part.partition_parent = Some("/dev/loop1".into());
        let mut disk = dev("/dev/loop1");
        disk.available = false;
        let why = refusal(&disks(&["/dev/loop1"]), &[disk, part]).expect("refused");
        assert!(
            why.contains("partition table with partitions /dev/loop1p1"),
            "{why}"
        );
        assert!(!why.contains("unavailable"), "{why}");

        let mut busy = dev("/dev/loop1");
        busy.available = false;
        let why = refusal(&disks(&["/dev/loop1"]), &[busy]).expect("refused");
        assert!(why.contains("reported unavailable"), "{why}");
    }

    #[test]
    fn unknown_disks_are_refused() {
        let why = refusal(&disks(&["/dev/loop9"]), &[dev("/dev/loop1")]).expect("refused");
        assert!(why.contains("not among the block devices"), "{why}");
        assert!(unknown(&disks(&["/dev/loop9"]), "unimplemented").contains("cannot tell"));
    }
}
