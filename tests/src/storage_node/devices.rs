//! The node's block devices, as `ListBlockDevices` (v0 and v1) reports them.
//!
//! The io-engine reads them from udev; this node reads sysfs, its own
//! signature [`probe`](super::probe) and the mount table, so that it needs no
//! running udevd. The fields mean what the io-engine's mean: `filesystem` when
//! a filesystem or another content signature is found (its `fstype` named as
//! udev names it), partitions as devices of their own whose `parent` is the
//! disk, and `available` false when the device is in use as far as the node
//! can tell. Deliberate differences from the io-engine, both on the side of
//! caution:
//! - a disk whose first sectors hold a partition table is unavailable even
//!   when the kernel shows no partitions of it (the io-engine sees the table
//!   only through the partitions udev lists);
//! - a device with holders (device-mapper, md) is unavailable.
//!
//! Regular files under an allowed path prefix other than `/dev` (a node run
//! without root on files) are listed as devices of type `file`.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::probe::{PROBE_BYTES, Signature, signature};

/// One device, in the terms of the wire messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDevice {
    pub devname: String,
    /// "disk", "partition" or "file".
    pub devtype: String,
    pub major: u32,
    pub minor: u32,
    /// sysfs path below /sys.
    pub devpath: String,
    pub devlinks: Vec<String>,
    /// In 512-byte sectors.
    pub size: u64,
    /// Devname of the disk holding this partition.
    pub parent: Option<String>,
    pub partition_number: u32,
    pub fstype: Option<String>,
    pub mountpoints: Vec<String>,
    pub available: bool,
}

/// Every block device of the machine, and the regular files directly inside
/// `allowed` prefixes other than `/dev`.
pub fn list(allowed: &[PathBuf]) -> Vec<BlockDevice> {
    let mounts = mounts();
    let links = devlinks();
    let mut devices: Vec<BlockDevice> = Vec::new();
    let mut to_probe: Vec<usize> = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return devices;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let sys = entry.path();
        let real = std::fs::canonicalize(&sys).unwrap_or(sys.clone());
        let devname = format!("/dev/{name}");
        let (major, minor) = read_trimmed(&sys.join("dev"))
            .and_then(|d| {
                let (a, b) = d.split_once(':')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .unwrap_or((0, 0));
        let is_partition = sys.join("partition").exists();
        let parent = is_partition
            .then(|| {
                real.parent()
                    .and_then(|p| p.file_name())
                    .map(|p| format!("/dev/{}", p.to_string_lossy()))
            })
            .flatten();
        let size = read_trimmed(&sys.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let holders = std::fs::read_dir(sys.join("holders"))
            .map(|d| d.count())
            .unwrap_or(0);
        let mountpoints = mounts.get(&devname).cloned().unwrap_or_default();
        if size > 0 {
            to_probe.push(devices.len());
        }
        devices.push(BlockDevice {
            // And nothing found on it: see the probes below.
            available: size > 0 && holders == 0 && mountpoints.is_empty(),
            devtype: if is_partition { "partition" } else { "disk" }.into(),
            major,
            minor,
            devpath: real
                .to_string_lossy()
                .strip_prefix("/sys")
                .unwrap_or_default()
                .to_string(),
            devlinks: links.get(&devname).cloned().unwrap_or_default(),
            size,
            parent,
            partition_number: read_trimmed(&sys.join("partition"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            fstype: None,
            mountpoints,
            devname,
        });
    }
    // Reading each device's head goes through its driver (a loop device's
    // worker reads the backing file afresh after every last close): done one
    // after the other, 60 loop devices took 75 ms; side by side, a few.
    let heads = probe_all(
        to_probe
            .iter()
            .map(|&i| devices[i].devname.clone())
            .collect(),
    );
    for (i, found) in to_probe.into_iter().zip(heads) {
        let d = &mut devices[i];
        d.available &= found.is_none();
        d.fstype = found.and_then(|s| s.fstype).map(str::to_string);
    }
    // A disk with partitions is in use by them.
    let parents: Vec<String> = devices.iter().filter_map(|d| d.parent.clone()).collect();
    for d in &mut devices {
        if parents.contains(&d.devname) {
            d.available = false;
        }
    }
    for prefix in allowed.iter().filter(|p| !p.starts_with("/dev")) {
        let Ok(entries) = std::fs::read_dir(prefix) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let devname = path.to_string_lossy().into_owned();
            let found = probe(&path);
            let mountpoints = mounts.get(&devname).cloned().unwrap_or_default();
            devices.push(BlockDevice {
                available: found.is_none() && mountpoints.is_empty(),
                devtype: "file".into(),
                size: meta.len() / 512,
                fstype: found.as_ref().and_then(|s| s.fstype).map(str::to_string),
                mountpoints,
                devname,
                ..Default::default()
            });
        }
    }
    devices.sort_by(|a, b| a.devname.cmp(&b.devname));
    devices
}

/// [`probe`] of each path, on up to 16 threads at once; in the order given.
fn probe_all(paths: Vec<String>) -> Vec<Option<Signature>> {
    let per_thread = paths.len().div_ceil(16).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|p| probe(Path::new(p)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker's panic is the caller's (never a shorter list whose
            // answers would land on the wrong devices).
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The foreign signature at the start of `path`, if any; nothing when it
/// cannot be read (the device is then still listed, and its size says
/// whether it is there).
fn probe(path: &Path) -> Option<Signature> {
    let file = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; PROBE_BYTES];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    head.truncate(got);
    signature(&head)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Mount points by mount source (device path), from /proc/self/mountinfo.
fn mounts() -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return out;
    };
    for line in text.lines() {
        // "... mountpoint ... - fstype source options"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mountpoint) = left.split(' ').nth(4) else {
            continue;
        };
        let Some(source) = right.split(' ').nth(1) else {
            continue;
        };
        if !source.starts_with('/') {
            continue;
        }
        let source = std::fs::canonicalize(source)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| source.to_string());
        out.entry(source).or_default().push(unescape(mountpoint));
    }
    out
}

/// Mount table paths escape space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The /dev/disk/by-* symlinks of each device, as udev's DEVLINKS.
fn devlinks() -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let Ok(kinds) = std::fs::read_dir("/dev/disk") else {
        return out;
    };
    for kind in kinds.flatten() {
        let Ok(links) = std::fs::read_dir(kind.path()) else {
            continue;
        };
        for link in links.flatten() {
            if let Ok(target) = std::fs::canonicalize(link.path()) {
                out.entry(target.to_string_lossy().into_owned())
                    .or_default()
                    .push(link.path().to_string_lossy().into_owned());
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/odd\x"), r"/odd\x");
    }
}
