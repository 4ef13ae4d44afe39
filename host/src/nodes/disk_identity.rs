//! Disk identity: a pool stays bound to the disk it was created on when the
//! disk's kernel name moves.
//!
//! `/dev/sdb` (or `/dev/loop3`, `/dev/nvme0n1`) is the name the kernel gave a
//! device at this boot; after a reboot, or a loop device attached again, it
//! may be another disk. So when a pool is created the operator pins, per
//! disk, what the node reports that names the disk itself across reboots
//! ([`pin`]): its persistent links under `/dev/disk/` ([`PERSISTENT`]) and its
//! size, kept in the ledger entry ([`DiskId`]). Before every create and
//! import, the path is resolved again in the node's `ListBlockDevices` and
//! compared with the pin ([`check`]):
//! - the same disk: go ahead;
//! - another disk (its links of the strongest kind both sides have differ),
//!   or the pinned disk found under another name: nothing is called, and
//!   the reason says what the path is now and where the pool's disk is;
//! - the node's answer cannot tell (the path is not listed, or carries none
//!   of the kinds of link pinned: a link not created yet after a reboot, a
//!   node that reports none): never taken for the same disk nor for another
//!   one; nothing is called, and it is asked again.
//!
//! A pinned disk found under another name is *not* imported from there
//! automatically (the risk, both ways: `docs/architecture.md`); the admin
//! points `spec.disks` at the persistent link, an edit that [`renamed`]
//! accepts without touching the pool since it names the same disk.
//!
//! `/dev/disk/by-diskseq/N` is never an identity: the kernel counts it up at
//! every attach, so the same disk gets a new one and a number may come back.
//! A disk the node reports no persistent link for is pinned without links:
//! nothing identifies it, and it is checked as before (by path alone).
//!
//! Pure functions of the node's device list and the pins: the controller
//! lists the devices and calls them.

use crate::nodes::client::{BlockDeviceInfo, disk_path};
use crate::nodes::disk_safety;
use crate::state::ledger::DiskId;

/// The directories of `/dev/disk/` whose links name a disk across reboots,
/// strongest first: compared by the first kind both sides have. by-id is
/// the disk itself (WWN, serial); by-loop-ref and by-loop-inode a loop
/// device's backing file; by-partuuid a partition's entry in its disk's
/// table; by-path the port it is plugged into (a disk moved to another slot
/// changes it). Not by-uuid or by-label: they name a filesystem on the disk,
/// which a wipe or the pool's own create removes.
pub const PERSISTENT: [&str; 5] = [
    "by-id",
    "by-loop-ref",
    "by-loop-inode",
    "by-partuuid",
    "by-path",
];

/// by-id links that name what is written on a disk, not the disk: an LVM
/// physical volume's label (udev's LVM rules add it), gone when it is wiped.
const CONTENT_IDS: [&str; 1] = ["lvm-pv-uuid-"];

/// What to tell the admin whose pool is held back by a name that moved.
const POINT_AT_LINK: &str = "point spec.disks at a persistent link (an edit to another name of \
                             the pool's disk is accepted without touching the pool)";

/// The kind of a link (`by-id`, ...), when it is one of the [`PERSISTENT`] ones.
pub fn kind(link: &str) -> Option<&'static str> {
    let (dir, name) = link.strip_prefix("/dev/disk/")?.split_once('/')?;
    if dir == "by-id" && CONTENT_IDS.iter().any(|c| name.starts_with(c)) {
        return None;
    }
    PERSISTENT.iter().copied().find(|k| *k == dir)
}

/// The persistent links of `dev`, sorted.
pub fn persistent_links(dev: &BlockDeviceInfo) -> Vec<String> {
    let mut links: Vec<String> = dev
        .devlinks
        .iter()
        .filter(|l| kind(l).is_some())
        .cloned()
        .collect();
    links.sort();
    links.dedup();
    links
}

/// The device `disk` names on the node: by its kernel name or one of its
/// links (the one place a disk is matched to a device by its path).
pub use crate::nodes::disk_health::locate as resolve;

/// The pins of `disks` as the node reports them now: one per disk that
/// resolves (a `malloc:///` disk holds nothing to pin). A disk the node
/// does not list is not pinned.
pub fn pin(disks: &[String], devices: &[BlockDeviceInfo]) -> Vec<DiskId> {
    disks
        .iter()
        .filter(|d| disk_safety::needs_check(std::slice::from_ref(*d)))
        .filter_map(|disk| {
            let dev = resolve(disk, devices)?;
            Some(DiskId {
                disk: disk.clone(),
                devname: dev.devname.clone(),
                links: persistent_links(dev),
                // The node reports 512-byte sectors.
                size: dev.size.saturating_mul(512),
                aliases: Vec::new(),
            })
        })
        .collect()
}

/// True when `devices` list each of `disks` (but `malloc:///` ones): a
/// listing that pins them all.
pub fn lists_all(disks: &[String], devices: &[BlockDeviceInfo]) -> bool {
    disks
        .iter()
        .filter(|d| disk_safety::needs_check(std::slice::from_ref(*d)))
        .all(|d| resolve(d, devices).is_some())
}

/// True when `pins` identify at least one disk (the node reported a
/// persistent link for it).
pub fn identified(pins: &[DiskId]) -> bool {
    pins.iter().any(|p| !p.links.is_empty())
}

/// Whether `dev` is the pinned disk: by the strongest kind of link both
/// have (some link in common: the same disk; none: another one); `None`
/// when they have no kind in common, so nothing tells.
pub fn matches(pin: &DiskId, dev: &BlockDeviceInfo) -> Option<bool> {
    let now = persistent_links(dev);
    PERSISTENT.iter().find_map(|k| {
        let pinned: Vec<&String> = pin.links.iter().filter(|l| kind(l) == Some(k)).collect();
        let seen: Vec<&String> = now.iter().filter(|l| kind(l) == Some(k)).collect();
        (!pinned.is_empty() && !seen.is_empty()).then(|| pinned.iter().any(|l| seen.contains(l)))
    })
}

/// The best name to show for a set of links: by-id first (a WWN before
/// other by-id links), then the other kinds in [`PERSISTENT`]'s order.
pub fn stable_name(links: &[String]) -> Option<&String> {
    links.iter().min_by_key(|l| {
        let rank = kind(l).and_then(|k| PERSISTENT.iter().position(|p| *p == k));
        let wwn = l.starts_with("/dev/disk/by-id/wwn-");
        (rank.unwrap_or(usize::MAX), !wwn, l.len(), l.as_str())
    })
}

/// The persistent names of the pinned disks, for status: one per disk the
/// node reported a persistent link for, in the pins' order.
pub fn shown(pins: &[DiskId]) -> Vec<String> {
    pins.iter()
        .filter_map(|p| stable_name(&p.links).cloned())
        .collect()
}

/// What the check says about the paths of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every pinned disk is where its path points (or nothing is pinned).
    Same,
    /// A path names another disk than the pinned one, or the pinned disk
    /// is under another name: what and where.
    Moved(String),
    /// The node's answer does not tell: why.
    Unknown(String),
}

/// The pin of `disk` among `pins`, by its name or a name it had.
pub fn pin_of<'a>(disk: &str, pins: &'a [DiskId]) -> Option<&'a DiskId> {
    let path = disk_path(disk);
    pins.iter()
        .find(|p| disk_path(&p.disk) == path || p.aliases.iter().any(|a| disk_path(a) == path))
}

/// Checks each of `disks` against its pin in the node's `devices`.
pub fn check(disks: &[String], pins: &[DiskId], devices: &[BlockDeviceInfo]) -> Check {
    let mut moved = Vec::new();
    let mut unknown = Vec::new();
    for disk in disks {
        let Some(pin) = pin_of(disk, pins).filter(|p| !p.links.is_empty()) else {
            continue;
        };
        let now = resolve(disk, devices);
        let found = devices.iter().find(|d| matches(pin, d) == Some(true));
        let pinned = describe_pin(pin);
        match (now, found) {
            (Some(dev), Some(at)) if dev.devname == at.devname => {}
            (now, Some(at)) => moved.push(format!(
                "{}; the pool's disk is at {}",
                what_now(disk, now),
                describe_dev(at)
            )),
            (Some(dev), None) if matches(pin, dev) == Some(false) => moved.push(format!(
                "{}; the pool's disk ({pinned}) is not among the node's devices",
                what_now(disk, Some(dev))
            )),
            (Some(dev), None) => unknown.push(format!(
                "{} shows none of the links the pool's disk was pinned by ({pinned}) in the \
                 node's answer",
                named(disk, dev)
            )),
            (None, None) => unknown.push(format!(
                "{disk} is not among the node's devices, nor is the pool's disk ({pinned})"
            )),
        }
    }
    if !moved.is_empty() {
        moved.extend(unknown);
        return Check::Moved(format!(
            "{}: nothing is called on it; {POINT_AT_LINK}",
            moved.join("; ")
        ));
    }
    if !unknown.is_empty() {
        return Check::Unknown(format!(
            "{}: it is taken neither for the pool's disk nor for another one, and nothing is \
             called on it until the node reports the disk's links (a link not created yet \
             after a reboot, or a node that reports none); asked again",
            unknown.join("; ")
        ));
    }
    Check::Same
}

/// Why nothing may be called to create or import the pool on `disks`
/// pinned as `pins`, given the node's device listing (or why it failed);
/// `None` when the call may go ahead. A listing that failed stops only a
/// pool with something pinned (one without is checked as before: a create
/// is then refused by the disk check).
pub fn refusal(
    disks: &[String],
    pins: &[DiskId],
    listed: Result<&[BlockDeviceInfo], &str>,
) -> Option<String> {
    match listed {
        Ok(devices) => match check(disks, pins, devices) {
            Check::Same => None,
            Check::Moved(why) | Check::Unknown(why) => Some(why),
        },
        Err(error) if identified(pins) => Some(format!(
            "the node could not list its block devices ({error}), so the operator cannot tell              whether {} still names the pool's disk: nothing is called until it can; asked again",
            disks.join(", ")
        )),
        Err(_) => None,
    }
}

/// The pins a create or import records before it calls the node: those
/// already pinned (the pool's disks, whatever the path names now); for a
/// create with nothing pinned, the disks as the node lists them now. An
/// import with nothing pinned records none yet: see [`after_import`].
pub fn to_record(
    disks: &[String],
    pinned: &[DiskId],
    devices: Option<&[BlockDeviceInfo]>,
    create: bool,
) -> Vec<DiskId> {
    match devices {
        Some(devices) if create && !identified(pinned) => pin(disks, devices),
        _ => pinned.to_vec(),
    }
}

/// The pins to record after an import succeeded on `disks` with nothing
/// pinned (a pool pinned before pins were kept, or by a version that
/// dropped them): the node found the pool there (by its uuid, on v1), so
/// the devices are its disks. `None` when there is nothing new to pin.
pub fn after_import(
    disks: &[String],
    pinned: &[DiskId],
    devices: &[BlockDeviceInfo],
) -> Option<Vec<DiskId>> {
    if identified(pinned) {
        return None;
    }
    let pins = pin(disks, devices);
    identified(&pins).then_some(pins)
}

/// "/dev/loop3 is now another disk (...)" or "... is not among ...".
fn what_now(disk: &str, now: Option<&BlockDeviceInfo>) -> String {
    match now {
        Some(dev) if disk_path(disk) == dev.devname => {
            format!("{disk} is now another disk ({})", links_of(dev))
        }
        Some(dev) => format!("{disk} is now another disk ({})", describe_dev(dev)),
        None => format!("{disk} is not among the node's devices"),
    }
}

/// `disk` and what it resolves to: "/dev/loop3 (its best link)", or
/// "/dev/disk/by-id/x (/dev/loop3 (its best link))" for another name of it.
fn named(disk: &str, dev: &BlockDeviceInfo) -> String {
    if disk_path(disk) == dev.devname {
        format!("{disk} ({})", links_of(dev))
    } else {
        format!("{disk} ({})", describe_dev(dev))
    }
}

/// "/dev/loop5 (by-id …)".
fn describe_dev(dev: &BlockDeviceInfo) -> String {
    format!("{} ({})", dev.devname, links_of(dev))
}

fn links_of(dev: &BlockDeviceInfo) -> String {
    let links = persistent_links(dev);
    stable_name(&links)
        .cloned()
        .unwrap_or_else(|| "no persistent link".to_string())
}

/// The pinned disk's best link, and its name when pinned.
fn describe_pin(pin: &DiskId) -> String {
    let name = stable_name(&pin.links)
        .cloned()
        .unwrap_or_else(|| pin.devname.clone());
    if pin.devname.is_empty() {
        name
    } else {
        format!("{name}, {} when pinned", pin.devname)
    }
}

/// The pins after a path edit from `old` to `new` disks, when every new
/// name resolves on the node to a pinned disk of the pool, each once (the
/// same disks under other names: accepted without touching the pool); else
/// why not (an edit to another disk is ignored, as any spec edit after
/// creation). A disk with nothing pinned keeps its name or nothing tells.
pub fn renamed(
    old: &[String],
    new: &[String],
    pins: &[DiskId],
    devices: &[BlockDeviceInfo],
) -> Result<Vec<DiskId>, String> {
    if old.len() != new.len() {
        return Err(format!(
            "spec.disks names {} disks and the pool has {}",
            new.len(),
            old.len()
        ));
    }
    let mut updated: Vec<DiskId> = Vec::new();
    let mut taken: Vec<&str> = Vec::new();
    for name in new {
        if let Some(same) = old.iter().find(|o| disk_path(o) == disk_path(name)) {
            if taken.contains(&same.as_str()) {
                return Err(format!("{name} names {same} a second time"));
            }
            taken.push(same);
            if let Some(pin) = pin_of(same, pins) {
                updated.push(pin.clone());
            }
            continue;
        }
        let Some(dev) = resolve(name, devices) else {
            return Err(format!("{name} is not among the node's devices"));
        };
        let Some((disk, pin)) = old.iter().find_map(|o| {
            let pin = pin_of(o, pins).filter(|p| !p.links.is_empty())?;
            (matches(pin, dev) == Some(true)).then_some((o, pin))
        }) else {
            return Err(format!(
                "{name} ({}) is none of the pool's disks as pinned at creation",
                describe_dev(dev)
            ));
        };
        if taken.contains(&disk.as_str()) {
            return Err(format!("{name} names {disk} a second time"));
        }
        taken.push(disk);
        let mut pin = pin.clone();
        if !pin.aliases.contains(&pin.disk) {
            pin.aliases.push(pin.disk.clone());
        }
        pin.aliases.retain(|a| disk_path(a) != disk_path(name));
        pin.disk = name.clone();
        updated.push(pin);
    }
    Ok(updated)
}

/// True when `disk` is a kernel name (`/dev/sdb`, `/dev/nvme0n1p2`,
/// `/dev/loop3`, `/dev/vdb`, ...): a name the kernel gives at this boot.
pub fn kernel_name(disk: &str) -> bool {
    let path = disk_path(disk);
    let Some(name) = path.strip_prefix("/dev/") else {
        return false;
    };
    if name.contains('/') {
        return false;
    }
    let letters_then_digits = |rest: &str| {
        let tail = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
        tail.len() < rest.len() && tail.chars().all(|c| c.is_ascii_digit())
    };
    // n, n"p"m: nvme0n1, loop3, loop3p1, mmcblk0p1, nbd0.
    let numbered = |rest: &str, inner: Option<char>| {
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        let (main, part) = match rest.split_once('p') {
            Some((m, p)) => (m, Some(p)),
            None => (rest, None),
        };
        let main_ok = match inner {
            Some(sep) => main
                .split_once(sep)
                .is_some_and(|(a, b)| digits(a) && digits(b)),
            None => digits(main),
        };
        main_ok && part.is_none_or(digits)
    };
    for prefix in ["sd", "vd", "xvd", "hd"] {
        if let Some(rest) = name.strip_prefix(prefix)
            && letters_then_digits(rest)
        {
            return true;
        }
    }
    if let Some(rest) = name.strip_prefix("nvme") {
        return numbered(rest, Some('n'));
    }
    for prefix in ["loop", "mmcblk", "nbd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return numbered(rest, None);
        }
    }
    name.strip_prefix("dm-")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The note for a resource whose `disks` name kernel names: the persistent
/// link the node reports for each, or that it reports none. `None` when no
/// disk is a kernel name the node lists.
pub fn unstable_note(disks: &[String], devices: &[BlockDeviceInfo]) -> Option<String> {
    let notes: Vec<String> = disks
        .iter()
        .filter(|d| kernel_name(d))
        .filter_map(|disk| {
            let dev = resolve(disk, devices)?;
            let links = persistent_links(dev);
            Some(match stable_name(&links) {
                Some(link) => format!("{disk} is {link}"),
                None => format!(
                    "the node reports no persistent link for {disk}, so the operator cannot \
                     tell it from another disk after a reboot"
                ),
            })
        })
        .collect();
    (!notes.is_empty()).then(|| {
        format!(
            "spec.disks names kernel names, which can name another disk after a reboot: {}; \
             name the disks by a persistent link (/dev/disk/by-id/...): an edit to another name \
             of the same disk is accepted without touching the pool",
            notes.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, links: &[&str]) -> BlockDeviceInfo {
        BlockDeviceInfo {
            devname: name.into(),
            devlinks: links.iter().map(|s| s.to_string()).collect(),
            available: true,
            size: 131_072,
            ..Default::default()
        }
    }

    fn disks(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| s.to_string()).collect()
    }

    const A: &str = "/dev/disk/by-id/msp-loop-a";
    const B: &str = "/dev/disk/by-id/msp-loop-b";

    /// Two loop devices as the tests' udev rule makes them, with their
    /// by-diskseq links (never an identity).
    fn two() -> Vec<BlockDeviceInfo> {
        vec![
            dev("/dev/loop3", &[A, "/dev/disk/by-diskseq/11"]),
            dev("/dev/loop5", &[B, "/dev/disk/by-diskseq/12"]),
        ]
    }

    fn swapped() -> Vec<BlockDeviceInfo> {
        vec![
            dev("/dev/loop3", &[B, "/dev/disk/by-diskseq/13"]),
            dev("/dev/loop5", &[A, "/dev/disk/by-diskseq/14"]),
        ]
    }

    #[test]
    fn a_pin_keeps_the_persistent_links_and_never_the_diskseq() {
        let devices = vec![dev(
            "/dev/sdb",
            &[
                "/dev/disk/by-diskseq/9",
                "/dev/disk/by-path/pci-0000:00:1f.2-ata-2",
                "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
                "/dev/disk/by-id/ata-ST4000_Z1Z2",
            ],
        )];
        let pins = pin(&disks(&["/dev/sdb", "malloc:///m", "/dev/sdz"]), &devices);
        assert_eq!(pins.len(), 1, "malloc and unlisted disks are not pinned");
        assert_eq!(pins[0].disk, "/dev/sdb");
        assert_eq!(pins[0].devname, "/dev/sdb");
        assert_eq!(pins[0].size, 64 << 20, "bytes, from 512-byte sectors");
        assert_eq!(
            pins[0].links,
            vec![
                "/dev/disk/by-id/ata-ST4000_Z1Z2",
                "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
                "/dev/disk/by-path/pci-0000:00:1f.2-ata-2",
            ]
        );
        assert_eq!(
            shown(&pins),
            vec!["/dev/disk/by-id/wwn-0x5000c500a1b2c3d4".to_string()]
        );
        // A loop device as this machine's udev makes it: only by-diskseq.
        let bare = pin(
            &disks(&["/dev/loop1"]),
            &[dev("/dev/loop1", &["/dev/disk/by-diskseq/7"])],
        );
        assert!(bare[0].links.is_empty() && !identified(&bare));
        assert!(shown(&bare).is_empty());
        assert_eq!(
            check(&disks(&["/dev/loop1"]), &bare, &swapped()),
            Check::Same,
            "nothing identifies it: checked by path alone, as before"
        );
    }

    /// A link made from what is written on a disk (a filesystem's by-uuid,
    /// an LVM physical volume's by-id/lvm-pv-uuid-) goes when the disk is
    /// wiped or a pool formats it: it names the content, not the disk. A
    /// create refused for that content pins before the admin wipes it, and
    /// must find the same disk afterwards.
    #[test]
    fn a_link_made_from_the_disks_content_is_not_its_identity() {
        let held = vec![
            dev(
                "/dev/loop1",
                &[
                    "/dev/disk/by-id/lvm-pv-uuid-pfD1XU-trtU-UQCO",
                    "/dev/disk/by-diskseq/5",
                ],
            ),
            dev(
                "/dev/loop2",
                &[
                    A,
                    "/dev/disk/by-uuid/3e8bed3e-8df0-4f1c-9d57-1f0c5e3b2a10",
                    "/dev/disk/by-label/data",
                ],
            ),
        ];
        let pins = pin(&disks(&["/dev/loop1", "/dev/loop2"]), &held);
        assert!(pins[0].links.is_empty(), "{:?}", pins[0].links);
        assert_eq!(pins[1].links, vec![A.to_string()]);
        let wiped = vec![
            dev("/dev/loop1", &["/dev/disk/by-diskseq/5"]),
            dev("/dev/loop2", &[A]),
        ];
        assert_eq!(
            check(&disks(&["/dev/loop1", "/dev/loop2"]), &pins, &wiped),
            Check::Same
        );
    }

    #[test]
    fn the_same_disk_passes_by_any_of_its_names() {
        let pins = pin(&disks(&["/dev/loop3"]), &two());
        assert!(identified(&pins));
        assert_eq!(check(&disks(&["/dev/loop3"]), &pins, &two()), Check::Same);
        // A loop device attached again gets a new diskseq: still the same disk.
        let again = vec![dev("/dev/loop3", &[A, "/dev/disk/by-diskseq/40"])];
        assert_eq!(check(&disks(&["/dev/loop3"]), &pins, &again), Check::Same);
        // Named by its link, the pin found by its old name.
        let mut by_link = pins.clone();
        by_link[0].aliases.push("/dev/loop3".into());
        by_link[0].disk = A.into();
        assert_eq!(check(&disks(&[A]), &by_link, &swapped()), Check::Same);
        assert_eq!(
            check(&disks(&["/dev/loop3"]), &by_link, &two()),
            Check::Same
        );
    }

    #[test]
    fn a_swapped_name_is_another_disk_and_the_reason_says_where_the_pool_is() {
        let pins = pin(&disks(&["/dev/loop3"]), &two());
        let Check::Moved(why) = check(&disks(&["/dev/loop3"]), &pins, &swapped()) else {
            panic!("a swapped device is another disk");
        };
        assert!(
            why.starts_with(&format!(
                "/dev/loop3 is now another disk ({B}); the pool's disk is at /dev/loop5 ({A})"
            )),
            "{why}"
        );
        assert!(
            why.contains("point spec.disks at a persistent link"),
            "{why}"
        );
        // Gone from the node: another disk under the name, the pool's nowhere.
        let other = vec![dev("/dev/loop3", &[B])];
        let Check::Moved(why) = check(&disks(&["/dev/loop3"]), &pins, &other) else {
            panic!("another disk");
        };
        assert!(
            why.contains(&format!(
                "the pool's disk ({A}, /dev/loop3 when pinned) is not among"
            )),
            "{why}"
        );
        // The name gone, the pool's disk under another one.
        let moved = vec![dev("/dev/loop7", &[A])];
        let Check::Moved(why) = check(&disks(&["/dev/loop3"]), &pins, &moved) else {
            panic!("found elsewhere");
        };
        assert!(
            why.starts_with(&format!(
                "/dev/loop3 is not among the node's devices; the pool's disk is at /dev/loop7 ({A})"
            )),
            "{why}"
        );
    }

    #[test]
    fn a_missing_identity_is_neither_the_same_nor_another_disk() {
        let pins = pin(&disks(&["/dev/loop3"]), &two());
        // After a reboot, the link not created yet; or a node reporting none.
        let bare = vec![dev("/dev/loop3", &["/dev/disk/by-diskseq/20"])];
        let Check::Unknown(why) = check(&disks(&["/dev/loop3"]), &pins, &bare) else {
            panic!("cannot tell");
        };
        assert!(
            why.starts_with("/dev/loop3 (no persistent link) shows none of the links"),
            "{why}"
        );
        assert!(why.contains("asked again"), "{why}");
        // Named by its link, not there yet, and the disk nowhere to be seen.
        let mut by_link = pins.clone();
        by_link[0].disk = A.into();
        let Check::Unknown(why) = check(&disks(&[A]), &by_link, &bare) else {
            panic!("cannot tell");
        };
        assert!(
            why.contains(&format!("{A} is not among the node's devices")),
            "{why}"
        );
        // Only a weaker kind on the node: compared by it (another slot).
        let mut with_path = pins.clone();
        with_path[0].links = vec!["/dev/disk/by-path/pci-1".into()];
        let other_slot = vec![dev("/dev/loop3", &["/dev/disk/by-path/pci-2"])];
        assert!(matches!(
            check(&disks(&["/dev/loop3"]), &with_path, &other_slot),
            Check::Moved(_)
        ));
    }

    #[test]
    fn a_path_edit_to_another_name_of_the_same_disk_is_accepted() {
        let pins = pin(&disks(&["/dev/loop3", "/dev/loop5"]), &two());
        let updated = renamed(
            &disks(&["/dev/loop3", "/dev/loop5"]),
            &disks(&[A, "/dev/loop5"]),
            &pins,
            &two(),
        )
        .expect("the same disks");
        assert_eq!(updated[0].disk, A);
        assert_eq!(updated[0].aliases, vec!["/dev/loop3".to_string()]);
        assert_eq!(updated[1], pins[1]);
        // And back: the alias goes, the kernel name is the disk again.
        let back = renamed(
            &disks(&[A, "/dev/loop5"]),
            &disks(&["/dev/loop3", "/dev/loop5"]),
            &updated,
            &two(),
        )
        .expect("the same disks");
        assert_eq!(back[0].disk, "/dev/loop3");
        assert_eq!(back[0].aliases, vec![A.to_string()]);
        // Another disk's link, a name the node does not list, a disk twice.
        let pins1 = pin(&disks(&["/dev/loop3"]), &two());
        let why = renamed(&disks(&["/dev/loop3"]), &disks(&[B]), &pins1, &two())
            .expect_err("another disk");
        assert!(why.contains("is none of the pool's disks"), "{why}");
        assert!(
            renamed(
                &disks(&["/dev/loop3"]),
                &disks(&["/dev/disk/by-id/x"]),
                &pins1,
                &two()
            )
            .is_err()
        );
        assert!(
            renamed(
                &disks(&["/dev/loop3", "/dev/loop5"]),
                &disks(&[A, "/dev/loop3"]),
                &pins,
                &two()
            )
            .is_err()
        );
        assert!(renamed(&disks(&["/dev/loop3"]), &disks(&[A, B]), &pins, &two()).is_err());
        // Nothing pinned (no link at creation): nothing tells, refused.
        let bare = pin(&disks(&["/dev/loop3"]), &[dev("/dev/loop3", &[])]);
        assert!(renamed(&disks(&["/dev/loop3"]), &disks(&[A]), &bare, &two()).is_err());
    }

    #[test]
    fn what_a_create_or_import_records_and_when_it_stops() {
        let d = disks(&["/dev/loop3"]);
        let pins = pin(&d, &two());
        // A first create pins what the node lists; an import of an unpinned
        // pool pins only once the node found the pool there.
        assert_eq!(to_record(&d, &[], Some(&two()), true), pins);
        assert!(to_record(&d, &[], Some(&two()), false).is_empty());
        assert_eq!(after_import(&d, &[], &two()), Some(pins.clone()));
        assert_eq!(after_import(&d, &pins, &swapped()), None);
        let bare = [dev("/dev/loop3", &[])];
        assert_eq!(after_import(&d, &[], &bare), None);
        // Pinned: kept whatever the path names now.
        assert_eq!(to_record(&d, &pins, Some(&swapped()), true), pins);
        assert_eq!(to_record(&d, &pins, None, true), pins);
        // Stops on another disk, on a missing identity, and on a failed
        // listing only when something is pinned.
        assert_eq!(refusal(&d, &pins, Ok(&two())), None);
        assert!(refusal(&d, &pins, Ok(&swapped())).is_some());
        let why = refusal(&d, &pins, Err("unimplemented")).expect("cannot tell");
        assert!(
            why.contains("could not list its block devices (unimplemented)"),
            "{why}"
        );
        assert_eq!(refusal(&d, &[], Err("unimplemented")), None);
        assert_eq!(refusal(&d, &[], Ok(&swapped())), None);
        // A listing pins a create's disks only when it lists them all.
        assert!(lists_all(&disks(&["/dev/loop3", A, "malloc:///m"]), &two()));
        assert!(!lists_all(&disks(&["/dev/loop3", "/dev/loop9"]), &two()));
    }

    #[test]
    fn kernel_names_are_told_from_persistent_ones() {
        for name in [
            "/dev/sdb",
            "/dev/sdab1",
            "/dev/vdc",
            "/dev/xvda2",
            "/dev/nvme0n1",
            "/dev/nvme10n2p3",
            "/dev/loop3",
            "/dev/loop3p1",
            "/dev/mmcblk0p1",
            "/dev/dm-2",
            "aio:///dev/sdb?uuid=1",
        ] {
            assert!(kernel_name(name), "{name}");
        }
        for name in [
            A,
            "/dev/disk/by-path/pci-1",
            "/dev/sd",
            "/dev/nvme0",
            "/dev/loop",
            "/dev/loop-control",
            "/dev/mapper/vg-lv",
            "malloc:///m?size_mb=8",
        ] {
            assert!(!kernel_name(name), "{name}");
        }
        let note = unstable_note(&disks(&["/dev/loop3", A]), &two()).expect("a kernel name");
        assert!(note.contains(&format!("/dev/loop3 is {A}")), "{note}");
        let bare = [dev("/dev/loop3", &["/dev/disk/by-diskseq/3"])];
        let note = unstable_note(&disks(&["/dev/loop3"]), &bare).expect("a kernel name");
        assert!(note.contains("no persistent link for /dev/loop3"), "{note}");
        assert_eq!(unstable_note(&disks(&[A]), &two()), None);
    }
}
