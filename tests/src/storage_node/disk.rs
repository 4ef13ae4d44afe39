//! Disks as the storage node sees them: how a disk is named on the wire, and
//! the byte-level access the pool code needs.
//!
//! Two kinds, like the io-engine's bdev URIs:
//! - a block device, given as a plain path (`/dev/loop3`, `/dev/disk/by-id/…`)
//!   or as `aio:///dev/loop3?uuid=…` / `uring:///…`; reported back as
//!   `aio://<path>?uuid=<disk uuid>`. Only paths under /dev, or under a prefix
//!   the node was told to allow (tests), are accepted. Every access opens the
//!   device and closes it again: a held descriptor would keep a detached loop
//!   device alive and hide that the disk is gone.
//! - an in-memory disk `malloc:///name?size_mb=N`, for scale work: sparse
//!   (only written 4 KiB blocks take memory) and gone when the process exits.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a disk name is not acceptable (always the caller's mistake).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskNameError {
    #[error(
        "unsupported disk URI scheme in {0:?} (use a /dev path, aio://, uring:// or malloc://)"
    )]
    Scheme(String),
    #[error("disk path {0:?} is not absolute or contains '..'")]
    NotAbsolute(String),
    #[error("disk path {path:?} is outside the allowed prefixes {allowed}")]
    NotAllowed { path: String, allowed: String },
    #[error("bad malloc disk {0:?}: expected malloc:///name?size_mb=N with N > 0")]
    Malloc(String),
}

/// A disk named by a request, not yet opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSpec {
    /// A block device (or, under an allowed test prefix, a regular file).
    Block { path: PathBuf },
    /// An in-memory disk of the node.
    Malloc { name: String, size: u64 },
}

impl DiskSpec {
    /// Parses a plain path or URI and checks it against the allowed prefixes.
    pub fn parse(input: &str, allowed: &[PathBuf]) -> Result<Self, DiskNameError> {
        let input = input.trim();
        if let Some(rest) = input.strip_prefix("malloc://") {
            let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
            let name = name.trim_start_matches('/');
            let size_mb = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("size_mb="))
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0);
            return match size_mb {
                Some(mb) if !name.is_empty() => Ok(DiskSpec::Malloc {
                    name: name.to_owned(),
                    size: mb * 1024 * 1024,
                }),
                _ => Err(DiskNameError::Malloc(input.to_owned())),
            };
        }
        let path = if let Some(rest) = input
            .strip_prefix("aio://")
            .or_else(|| input.strip_prefix("uring://"))
        {
            rest.split_once('?').map_or(rest, |(p, _)| p)
        } else if input.contains("://") {
            return Err(DiskNameError::Scheme(input.to_owned()));
        } else {
            input
        };
        let path = Path::new(path);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(DiskNameError::NotAbsolute(input.to_owned()));
        }
        let allowed_here = |p: &Path| allowed.iter().any(|a| p.starts_with(a));
        // A symlink (e.g. /dev/disk/by-id/…) must also land inside.
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        if !allowed_here(path) || !allowed_here(&real) {
            return Err(DiskNameError::NotAllowed {
                path: input.to_owned(),
                allowed: allowed
                    .iter()
                    .map(|a| a.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(DiskSpec::Block {
            path: path.to_owned(),
        })
    }

    /// Identity of the underlying disk: two names of one device compare equal.
    pub fn key(&self) -> String {
        match self {
            DiskSpec::Block { path } => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            DiskSpec::Malloc { name, .. } => format!("malloc:{name}"),
        }
    }

    /// The URI reported in ListPools, in the io-engine's form.
    pub fn uri(&self, disk_uuid: &uuid::Uuid) -> String {
        match self {
            DiskSpec::Block { path } => format!("aio://{}?uuid={disk_uuid}", path.display()),
            DiskSpec::Malloc { name, size } => {
                format!(
                    "malloc:///{name}?size_mb={}&uuid={disk_uuid}",
                    size / (1024 * 1024)
                )
            }
        }
    }
}

/// The in-memory disks of one node, shared by its pools.
#[derive(Debug, Default, Clone)]
pub struct MallocStore {
    disks: Arc<Mutex<HashMap<String, MallocDisk>>>,
}

#[derive(Debug)]
struct MallocDisk {
    size: u64,
    blocks: BTreeMap<u64, Box<[u8; BLOCK]>>,
}

const BLOCK: usize = 4096;

/// A disk opened for one operation. Block devices are reopened for each call.
#[derive(Debug, Clone)]
pub struct Disk {
    spec: DiskSpec,
    malloc: MallocStore,
}

/// What kind of thing a block path turned out to be.
#[derive(Debug)]
pub enum Presence {
    Present,
    Missing,
    /// Exists but is neither a block device nor a regular file.
    NotADisk(String),
}

impl Disk {
    pub fn new(spec: DiskSpec, malloc: &MallocStore) -> Self {
        Self {
            spec,
            malloc: malloc.clone(),
        }
    }

    pub fn spec(&self) -> &DiskSpec {
        &self.spec
    }

    /// Whether the disk exists. A malloc disk comes into being when first
    /// named (as the io-engine creates a malloc bdev from its URI).
    pub fn presence(&self) -> Presence {
        match &self.spec {
            DiskSpec::Block { path } => match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Presence::Missing,
                Err(e) => Presence::NotADisk(e.to_string()),
                Ok(m) if m.file_type().is_block_device() || m.file_type().is_file() => {
                    Presence::Present
                }
                Ok(_) => Presence::NotADisk("not a block device".into()),
            },
            DiskSpec::Malloc { name, size } => {
                let mut disks = lock(&self.malloc.disks);
                disks.entry(name.clone()).or_insert_with(|| MallocDisk {
                    size: *size,
                    blocks: BTreeMap::new(),
                });
                Presence::Present
            }
        }
    }

    /// Current size in bytes (0 for a detached loop device).
    pub fn size(&self) -> std::io::Result<u64> {
        match &self.spec {
            DiskSpec::Block { path } => File::open(path)?.seek(SeekFrom::End(0)),
            DiskSpec::Malloc { name, .. } => {
                Ok(lock(&self.malloc.disks).get(name).map_or(0, |d| d.size))
            }
        }
    }

    /// Whether the device is read-only (`blockdev --setro`, BLKROGET).
    pub fn read_only(&self) -> std::io::Result<bool> {
        match &self.spec {
            DiskSpec::Block { path } => {
                let file = File::open(path)?;
                if !file.metadata()?.file_type().is_block_device() {
                    return Ok(file.metadata()?.permissions().readonly());
                }
                let mut ro: libc::c_int = 0;
                // SAFETY: BLKROGET writes one int through the pointer, which
                // points at a live c_int; the fd is open for the whole call.
                let rc = unsafe {
                    libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), BLKROGET, &mut ro)
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(ro != 0)
            }
            DiskSpec::Malloc { .. } => Ok(false),
        }
    }

    /// Reads up to `len` bytes at `offset` (fewer near the end of the disk).
    /// `direct` bypasses the page cache on block devices, so a health check
    /// sees the device and not a cached copy.
    pub fn read_at(&self, offset: u64, len: usize, direct: bool) -> std::io::Result<Vec<u8>> {
        match &self.spec {
            DiskSpec::Block { path } => {
                let size = self.size()?;
                let len = len.min(size.saturating_sub(offset) as usize);
                if direct
                    && offset.is_multiple_of(BLOCK as u64)
                    && len.is_multiple_of(BLOCK)
                    && let Ok(file) = OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECT)
                        .open(path)
                {
                    return read_direct(&file, offset, len);
                }
                let file = File::open(path)?;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset)?;
                Ok(buf)
            }
            DiskSpec::Malloc { name, .. } => {
                let disks = lock(&self.malloc.disks);
                let Some(d) = disks.get(name) else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "malloc disk gone",
                    ));
                };
                let len = len.min(d.size.saturating_sub(offset) as usize);
                let mut buf = vec![0u8; len];
                for (i, byte) in buf.iter_mut().enumerate() {
                    let pos = offset + i as u64;
                    if let Some(block) = d.blocks.get(&(pos / BLOCK as u64)) {
                        *byte = block[(pos % BLOCK as u64) as usize];
                    }
                }
                Ok(buf)
            }
        }
    }

    /// Writes `data` at `offset` and flushes it to the device. Block devices
    /// are opened with O_EXCL, so a disk that is mounted or otherwise claimed
    /// exclusively fails with EBUSY instead of being written.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match &self.spec {
            DiskSpec::Block { path } => {
                let is_block = std::fs::metadata(path)?.file_type().is_block_device();
                let mut opts = OpenOptions::new();
                opts.write(true);
                if is_block {
                    opts.custom_flags(libc::O_EXCL);
                }
                let file = opts.open(path)?;
                file.write_all_at(data, offset)?;
                file.sync_data()
            }
            DiskSpec::Malloc { name, .. } => {
                let mut disks = lock(&self.malloc.disks);
                let Some(d) = disks.get_mut(name) else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "malloc disk gone",
                    ));
                };
                if offset + data.len() as u64 > d.size {
                    return Err(std::io::Error::other("write past the end of the disk"));
                }
                for (i, byte) in data.iter().enumerate() {
                    let pos = offset + i as u64;
                    let block = d
                        .blocks
                        .entry(pos / BLOCK as u64)
                        .or_insert_with(|| Box::new([0u8; BLOCK]));
                    block[(pos % BLOCK as u64) as usize] = *byte;
                }
                Ok(())
            }
        }
    }
}

/// `_IO(0x12, 94)`: get the read-only flag of a block device.
const BLKROGET: libc::c_ulong = 0x125E;

/// O_DIRECT needs an aligned buffer: read into one, then copy out.
fn read_direct(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut raw = vec![0u8; len + BLOCK];
    let skew = raw.as_ptr().align_offset(BLOCK);
    let aligned = &mut raw[skew..skew + len];
    file.read_exact_at(aligned, offset)?;
    Ok(aligned.to_vec())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Vec<PathBuf> {
        vec![PathBuf::from("/dev")]
    }

    #[test]
    fn parses_paths_and_uris() {
        let want = DiskSpec::Block {
            path: "/dev/loop3".into(),
        };
        assert_eq!(DiskSpec::parse("/dev/loop3", &dev()), Ok(want.clone()));
        assert_eq!(DiskSpec::parse("aio:///dev/loop3?uuid=x", &dev()), Ok(want));
        assert_eq!(
            DiskSpec::parse("malloc:///m1?size_mb=64", &dev()),
            Ok(DiskSpec::Malloc {
                name: "m1".into(),
                size: 64 << 20
            })
        );
    }

    #[test]
    fn refuses_outside_dev_and_odd_names() {
        assert!(matches!(
            DiskSpec::parse("/etc/passwd", &dev()),
            Err(DiskNameError::NotAllowed { .. })
        ));
        assert!(matches!(
            DiskSpec::parse("/dev/../etc/passwd", &dev()),
            Err(DiskNameError::NotAbsolute(_))
        ));
        assert!(matches!(
            DiskSpec::parse("nvmf://host/nqn", &dev()),
            Err(DiskNameError::Scheme(_))
        ));
        assert!(matches!(
            DiskSpec::parse("malloc:///m1", &dev()),
            Err(DiskNameError::Malloc(_))
        ));
    }

    #[test]
    fn malloc_is_sparse_and_round_trips() {
        let store = MallocStore::default();
        let d = Disk::new(
            DiskSpec::Malloc {
                name: "m".into(),
                size: 1 << 30,
            },
            &store,
        );
        assert!(matches!(d.presence(), Presence::Present));
        d.write_at(4090, b"hello world").unwrap();
        assert_eq!(d.read_at(4090, 11, false).unwrap(), b"hello world");
        assert_eq!(d.size().unwrap(), 1 << 30);
    }
}
