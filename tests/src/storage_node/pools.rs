//! The pools of one storage node: create-or-import, import, destroy, export
//! and list, with the io-engine's semantics (see docs/wire.md).
//!
//! A pool is loaded in memory only after CreatePool or ImportPool in this
//! process's lifetime; like the io-engine, a restarted node loads nothing by
//! itself and waits for the control plane to ask again. What makes a pool
//! survive is the label on each of its disks ([`super::label`]). Unlike the
//! io-engine, which takes exactly one disk per pool, this node accepts several
//! disks per pool (capacity is the sum of their data areas).
//!
//! Answers as the io-engine's (develop 86f3f5a3, driven over v1): a pool
//! already loaded answers ALREADY_EXISTS to CreatePool and ImportPool, a
//! disk of a loaded pool named for another pool is INVALID_ARGUMENT "volume
//! is busy", so is a loaded pool's name asked for on other disks, and an
//! import from a disk with no pool; DestroyPool of a pool not loaded is
//! NOT_FOUND (checked by the differential test, io_engine_differential.rs). Deliberately
//! unlike the io-engine, a disk holding a filesystem, an LVM PV, a partition
//! table or another known signature is refused (FAILED_PRECONDITION) and
//! never written: the io-engine formats it (the operator's disk safety check
//! stops that before the call).
//!
//! The state reported by [`Pools::list`] is derived from the disks at every
//! call: faulted when a disk is gone (missing path, size 0, label no longer
//! there), degraded when one is read-only or fails reads, online otherwise.
//!
//! All methods do blocking I/O: call them from `spawn_blocking`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use uuid::Uuid;

use super::disk::{Disk, DiskSpec, MallocStore, Presence};
use super::label::{LABEL_SIZE, Label, LabelRead, MAX_NAME_LEN, RESERVED_BYTES};
use super::libblkid;
use super::probe::{PROBE_BYTES, foreign_signature};
use super::replicas::{self, Replica};

/// Cluster size reported for pools (the io-engine's default, 4 MiB).
pub const DEFAULT_CLUSTER_SIZE: u32 = 4 * 1024 * 1024;
/// Smallest disk accepted: the reserve plus one cluster.
pub const MIN_DISK_BYTES: u64 = RESERVED_BYTES + DEFAULT_CLUSTER_SIZE as u64;

/// A refused or failed pool operation, by the gRPC code it maps to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Internal(String),
}

/// Derived state of a pool (or of one disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Online,
    Degraded,
    Faulted,
}

/// A pool as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub name: String,
    pub uuid: Uuid,
    /// Disk URIs, in label order.
    pub disks: Vec<String>,
    pub state: Health,
    /// Why the state is not online (empty when online).
    pub reasons: Vec<String>,
    /// Usable bytes: the data areas of all disks.
    pub capacity: u64,
    /// Bytes its replicas take.
    pub used: u64,
    /// Raw bytes of all disks at creation.
    pub disk_capacity: u64,
    pub cluster_size: u32,
}

/// A replica with the pool it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub pool: String,
    pub pool_uuid: Uuid,
    pub replica: Replica,
}

/// Whether CreatePool may create a new pool, or only import one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    CreateOrImport,
    ImportOnly,
}

#[derive(Debug)]
struct PoolDisk {
    disk: Disk,
    label: Label,
}

#[derive(Debug)]
struct LoadedPool {
    uuid: Uuid,
    disks: Vec<PoolDisk>,
    /// As the first disk's table holds them ([`super::replicas`]).
    replicas: Vec<Replica>,
}

/// The pools of one node.
#[derive(Debug)]
pub struct Pools {
    allowed: Vec<PathBuf>,
    use_blkid: bool,
    malloc: MallocStore,
    loaded: Mutex<BTreeMap<String, LoadedPool>>,
}

/// One requested disk after looking at it.
struct Probed {
    disk: Disk,
    size: u64,
    label: Option<Label>,
}

impl Pools {
    /// Pools whose block disks must live under one of `allowed` (normally
    /// just `/dev`). `use_blkid` also asks libblkid (`wipefs`) about block
    /// disks our own probe finds blank, and refuses them unless it positively
    /// finds nothing (a missing tool or a failed probe refuses too).
    pub fn new(allowed: Vec<PathBuf>, use_blkid: bool) -> Self {
        Self {
            allowed,
            use_blkid,
            malloc: MallocStore::default(),
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    /// The path prefixes block disks must live under.
    pub fn allowed_prefixes(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// CreatePool / ImportPool: loads the pool labelled on `disks`, or
    /// (`CreateOrImport`, no label on any) makes a new one.
    pub fn create(
        &self,
        name: &str,
        uuid: Option<&str>,
        disks: &[String],
        mode: Mode,
    ) -> Result<PoolInfo, PoolError> {
        use PoolError::*;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(InvalidArgument(format!(
                "pool name must be 1 to {MAX_NAME_LEN} bytes, got {}",
                name.len()
            )));
        }
        if disks.is_empty() {
            return Err(InvalidArgument("Missing devices".into()));
        }
        let want_uuid = match uuid.filter(|u| !u.is_empty()) {
            Some(u) => Some(
                Uuid::parse_str(u)
                    .map_err(|e| InvalidArgument(format!("invalid pool uuid {u:?}: {e}")))?,
            ),
            None => None,
        };
        let mut specs = Vec::with_capacity(disks.len());
        for d in disks {
            let spec =
                DiskSpec::parse(d, &self.allowed).map_err(|e| InvalidArgument(e.to_string()))?;
            if specs.iter().any(|s: &DiskSpec| s.key() == spec.key()) {
                return Err(InvalidArgument(format!("disk {d:?} is named twice")));
            }
            specs.push(spec);
        }
        let keys: Vec<String> = specs.iter().map(DiskSpec::key).collect();

        let mut loaded = lock(&self.loaded);
        if let Some(pool) = loaded.get(name) {
            let mut have: Vec<String> = pool.disks.iter().map(|d| d.disk.spec().key()).collect();
            let mut want = keys.clone();
            have.sort();
            want.sort();
            if have != want {
                return Err(InvalidArgument(format!(
                    "pool {name:?} already exists on other disks ({})",
                    have.join(", ")
                )));
            }
            if want_uuid.is_some_and(|u| u != pool.uuid) {
                return Err(InvalidArgument(format!(
                    "pool uuid mismatch: pool {name:?} has uuid {}",
                    pool.uuid
                )));
            }
            // As the io-engine: a loaded pool is not created or imported again.
            return Err(AlreadyExists(format!(
                "volume already exists: pool {name:?} is loaded on these disks"
            )));
        }
        for (other, pool) in loaded.iter() {
            if let Some(d) = pool
                .disks
                .iter()
                .find(|d| keys.contains(&d.disk.spec().key()))
            {
                return Err(InvalidArgument(format!(
                    "volume is busy: disk {} belongs to pool {other:?}",
                    d.disk.spec().key()
                )));
            }
        }

        let probed = specs
            .into_iter()
            .map(|s| self.probe(Disk::new(s, &self.malloc)))
            .collect::<Result<Vec<_>, _>>()?;

        let labelled: Vec<&Probed> = probed.iter().filter(|p| p.label.is_some()).collect();
        let pool = if labelled.is_empty() {
            if mode == Mode::ImportOnly {
                return Err(InvalidArgument(format!(
                    "no pool label on {}: nothing to import",
                    keys.join(", ")
                )));
            }
            self.create_new(name, want_uuid, probed)?
        } else {
            import(name, want_uuid, probed)?
        };
        let out = info(name, &pool);
        loaded.insert(name.to_owned(), pool);
        Ok(out)
    }

    /// DestroyPool: erases our label from every disk of the pool that still
    /// carries it, and unloads the pool. Unknown names are NOT_FOUND. A disk
    /// that is gone keeps its label (it cannot be reached); a disk that is
    /// there but cannot be written fails the call and the pool stays loaded,
    /// so a retry can finish the job.
    pub fn destroy(&self, name: &str, uuid: Option<&str>) -> Result<(), PoolError> {
        let mut loaded = lock(&self.loaded);
        let Some(pool) = loaded.get(name) else {
            return Err(PoolError::NotFound(format!("pool {name:?} not found")));
        };
        if let Some(u) = uuid.filter(|u| !u.is_empty())
            && Uuid::parse_str(u).ok() != Some(pool.uuid)
        {
            return Err(PoolError::InvalidArgument(format!(
                "pool uuid mismatch: pool {name:?} has uuid {}",
                pool.uuid
            )));
        }
        // As the engine's: the pool's replicas go with it.
        if let Some(first) = pool.disks.first()
            && matches!(first.disk.presence(), Presence::Present)
        {
            let _ = first
                .disk
                .write_at(replicas::TABLE_OFFSET, &replicas::erased());
        }
        for d in &pool.disks {
            let Ok(block) = d.disk.read_at(0, LABEL_SIZE, true) else {
                tracing::warn!(disk = %d.disk.spec().key(), "disk unreadable; its label stays");
                continue;
            };
            match Label::decode(&block) {
                LabelRead::Valid(l) if l == d.label => {
                    d.disk.write_at(0, &[0u8; LABEL_SIZE]).map_err(|e| {
                        PoolError::FailedPrecondition(format!(
                            "cannot erase the label of pool {name:?} on {}: {e}",
                            d.disk.spec().key()
                        ))
                    })?;
                }
                // Not our label (any more): not ours to erase.
                _ => {}
            }
        }
        loaded.remove(name);
        Ok(())
    }

    /// ExportPool: unloads the pool, leaving its labels in place.
    pub fn export(&self, name: &str, uuid: Option<&str>) -> Result<(), PoolError> {
        let mut loaded = lock(&self.loaded);
        match loaded.get(name) {
            None => Err(PoolError::NotFound(format!("pool {name:?} not found"))),
            Some(p)
                if uuid
                    .is_some_and(|u| !u.is_empty() && Uuid::parse_str(u).ok() != Some(p.uuid)) =>
            {
                Err(PoolError::InvalidArgument(format!(
                    "pool uuid mismatch: pool {name:?} has uuid {}",
                    p.uuid
                )))
            }
            Some(_) => {
                loaded.remove(name);
                Ok(())
            }
        }
    }

    /// ListPools: every loaded pool with its state derived from its disks now.
    pub fn list(&self) -> Vec<PoolInfo> {
        let loaded = lock(&self.loaded);
        loaded.iter().map(|(name, pool)| info(name, pool)).collect()
    }

    /// CreateReplica on the loaded pool named or numbered `pool` (the engine
    /// takes either), as the engine answers: FAILED_PRECONDITION for a pool
    /// not loaded, ALREADY_EXISTS for a uuid some pool has, INVALID_ARGUMENT
    /// for a size of 0, RESOURCE_EXHAUSTED when it does not fit.
    pub fn create_replica(&self, pool: &str, replica: Replica) -> Result<ReplicaInfo, PoolError> {
        use PoolError::*;
        let mut loaded = lock(&self.loaded);
        if replica.uuid.is_empty() || replica.size == 0 {
            return Err(InvalidArgument(
                "a replica needs a uuid and a size above 0".into(),
            ));
        }
        if let Some((name, _)) = loaded
            .iter()
            .find(|(_, p)| p.replicas.iter().any(|r| r.uuid == replica.uuid))
        {
            return Err(AlreadyExists(format!(
                "replica {} already exists on pool {name:?}",
                replica.uuid
            )));
        }
        let Some((name, p)) = loaded
            .iter_mut()
            .find(|(name, p)| *name == pool || p.uuid.to_string() == pool)
        else {
            return Err(FailedPrecondition(format!("pool {pool:?} not found")));
        };
        let info_now = info(name, p);
        if replica.size > info_now.capacity.saturating_sub(info_now.used) {
            return Err(ResourceExhausted(format!(
                "no space on pool {name:?} for {} bytes",
                replica.size
            )));
        }
        let mut next = p.replicas.clone();
        next.push(replica.clone());
        write_replicas(p, &next)?;
        p.replicas = next;
        Ok(ReplicaInfo {
            pool: name.clone(),
            pool_uuid: p.uuid,
            replica,
        })
    }

    /// DestroyReplica: NOT_FOUND for a uuid no loaded pool has; with a pool
    /// named (or numbered) that is not the replica's, ABORTED (the engine's).
    pub fn destroy_replica(&self, uuid: &str, pool: Option<&str>) -> Result<(), PoolError> {
        let mut loaded = lock(&self.loaded);
        let Some((name, p)) = loaded
            .iter_mut()
            .find(|(_, p)| p.replicas.iter().any(|r| r.uuid == uuid))
        else {
            return Err(PoolError::NotFound(format!("replica {uuid} not found")));
        };
        if pool.is_some_and(|want| want != name.as_str() && want != p.uuid.to_string()) {
            return Err(PoolError::Aborted(format!(
                "specified pool does not match the target replica's pool {name:?}"
            )));
        }
        let next: Vec<Replica> = p
            .replicas
            .iter()
            .filter(|r| r.uuid != uuid)
            .cloned()
            .collect();
        write_replicas(p, &next)?;
        p.replicas = next;
        Ok(())
    }

    /// ListReplicas: every replica of every loaded pool (a pool not loaded
    /// lists nothing, as the engine's).
    pub fn list_replicas(&self) -> Vec<ReplicaInfo> {
        let loaded = lock(&self.loaded);
        loaded
            .iter()
            .flat_map(|(name, p)| {
                p.replicas.iter().map(|r| ReplicaInfo {
                    pool: name.clone(),
                    pool_uuid: p.uuid,
                    replica: r.clone(),
                })
            })
            .collect()
    }

    /// Looks at a requested disk: present, big enough, our label or blank,
    /// nothing foreign on it.
    fn probe(&self, disk: Disk) -> Result<Probed, PoolError> {
        use PoolError::*;
        let key = disk.spec().key();
        match disk.presence() {
            Presence::Present => {}
            Presence::Missing => return Err(NotFound(format!("disk {key} does not exist"))),
            Presence::NotADisk(why) => {
                return Err(FailedPrecondition(format!("disk {key}: {why}")));
            }
        }
        let size = disk
            .size()
            .map_err(|e| FailedPrecondition(format!("cannot open disk {key}: {e}")))?;
        if size == 0 {
            return Err(FailedPrecondition(format!(
                "disk {key} has size 0 (no medium, or a detached loop device)"
            )));
        }
        let head = disk
            .read_at(0, PROBE_BYTES, false)
            .map_err(|e| FailedPrecondition(format!("cannot read disk {key}: {e}")))?;
        match Label::decode(&head) {
            LabelRead::Valid(label) => {
                return Ok(Probed {
                    disk,
                    size,
                    label: Some(label),
                });
            }
            LabelRead::Corrupt(why) => {
                // Something written over our label (mkfs keeps bytes 0..1024)
                // is named for what it is.
                let what = foreign_signature(&head)
                    .map(|f| format!(" and holds {f}"))
                    .unwrap_or_default();
                return Err(FailedPrecondition(format!(
                    "disk {key} carries a damaged pool label ({why}){what}; not touching it"
                )));
            }
            LabelRead::Absent => {}
        }
        if let Some(found) = foreign_signature(&head) {
            return Err(FailedPrecondition(format!(
                "disk {key} holds {found}; refusing to use it"
            )));
        }
        Ok(Probed {
            disk,
            size,
            label: None,
        })
    }

    /// Writes fresh labels on blank disks; on a failure, erases the labels
    /// already written so a retry starts from blank disks again.
    fn create_new(
        &self,
        name: &str,
        uuid: Option<Uuid>,
        disks: Vec<Probed>,
    ) -> Result<LoadedPool, PoolError> {
        use PoolError::*;
        for p in &disks {
            let key = p.disk.spec().key();
            if p.size < MIN_DISK_BYTES {
                return Err(FailedPrecondition(format!(
                    "disk {key} has {} bytes, less than the {MIN_DISK_BYTES} a pool disk needs",
                    p.size
                )));
            }
            if p.disk.read_only().unwrap_or(false) {
                return Err(FailedPrecondition(format!("disk {key} is read-only")));
            }
            if let DiskSpec::Block { path } = p.disk.spec()
                && self.use_blkid
            {
                match libblkid::signatures(libblkid::WIPEFS, path) {
                    Ok(found) if found.is_empty() => {}
                    Ok(found) => {
                        return Err(FailedPrecondition(format!(
                            "disk {key} holds {} (found by libblkid); refusing to use it",
                            libblkid::describe(&found)
                        )));
                    }
                    Err(e) => {
                        return Err(FailedPrecondition(format!(
                            "disk {key} could not be probed for signatures, so it is not known to be blank ({e}); refusing to use it"
                        )));
                    }
                }
            }
        }
        let pool_uuid = uuid.unwrap_or_else(Uuid::new_v4);
        let count = disks.len() as u32;
        let mut written: Vec<PoolDisk> = Vec::with_capacity(disks.len());
        for (i, p) in disks.into_iter().enumerate() {
            let label = Label {
                pool_name: name.to_owned(),
                pool_uuid,
                disk_uuid: Uuid::new_v4(),
                disk_index: i as u32,
                disk_count: count,
                disk_size: p.size,
                data_offset: RESERVED_BYTES,
                cluster_size: DEFAULT_CLUSTER_SIZE,
            };
            written.push(PoolDisk {
                disk: p.disk,
                label,
            });
        }
        let pool = LoadedPool {
            uuid: pool_uuid,
            disks: written,
            replicas: Vec::new(),
        };
        write_labels(&pool)?;
        // A new pool holds nothing, whatever an old table there said.
        write_replicas(&pool, &[])?;
        Ok(pool)
    }
}

/// Writes `list` as the pool's replica table on its first disk.
fn write_replicas(pool: &LoadedPool, list: &[Replica]) -> Result<(), PoolError> {
    let Some(first) = pool.disks.first() else {
        return Err(PoolError::Internal("a pool without disks".into()));
    };
    let Some(table) = replicas::encode(list) else {
        return Err(PoolError::ResourceExhausted(
            "the pool's replica table is full".into(),
        ));
    };
    first
        .disk
        .write_at(replicas::TABLE_OFFSET, &table)
        .map_err(|e| PoolError::Internal(format!("writing the replica table: {e}")))
}

/// Writes (and reads back) the label of every disk of a new pool.
fn write_labels(pool: &LoadedPool) -> Result<(), PoolError> {
    for i in 0..pool.disks.len() {
        let d = &pool.disks[i];
        let block = d.label.encode();
        let res = d.disk.write_at(0, &block).and_then(|()| {
            let back = d.disk.read_at(0, LABEL_SIZE, true)?;
            if Label::decode(&back) == LabelRead::Valid(d.label.clone()) {
                Ok(())
            } else {
                Err(std::io::Error::other("label did not read back"))
            }
        });
        if let Err(e) = res {
            for prev in &pool.disks[..i] {
                let _ = prev.disk.write_at(0, &[0u8; LABEL_SIZE]);
            }
            let key = d.disk.spec().key();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => PoolError::FailedPrecondition(format!(
                    "disk {key} is in use (mounted or opened exclusively)"
                )),
                Some(libc::EROFS | libc::EACCES | libc::EPERM) => {
                    PoolError::FailedPrecondition(format!("disk {key} is not writable: {e}"))
                }
                _ => PoolError::Internal(format!("writing the label on {key}: {e}")),
            });
        }
    }
    Ok(())
}

/// Checks that the labels found on the requested disks form exactly the pool
/// `name`, and loads it.
fn import(
    name: &str,
    want_uuid: Option<Uuid>,
    probed: Vec<Probed>,
) -> Result<LoadedPool, PoolError> {
    use PoolError::*;
    let mut first: Option<Label> = None;
    for p in &probed {
        let key = p.disk.spec().key();
        let Some(l) = &p.label else {
            return Err(FailedPrecondition(format!(
                "disk {key} carries no pool label while the other disks do; refusing to mix import and create"
            )));
        };
        if l.pool_name != name {
            return Err(InvalidArgument(format!(
                "pool name mismatch: disk {key} carries pool {:?}, request names {name:?}",
                l.pool_name
            )));
        }
        if let Some(f) = &first
            && f.pool_uuid != l.pool_uuid
        {
            return Err(InvalidArgument(format!(
                "pool uuid mismatch: the disks carry labels of different pools named {name:?}"
            )));
        }
        if want_uuid.is_some_and(|u| u != l.pool_uuid) {
            return Err(InvalidArgument(format!(
                "pool uuid mismatch: disk {key} carries pool {name:?} with uuid {}",
                l.pool_uuid
            )));
        }
        if p.size < l.disk_size {
            return Err(FailedPrecondition(format!(
                "disk {key} shrank from {} to {} bytes since the pool was created",
                l.disk_size, p.size
            )));
        }
        first.get_or_insert_with(|| l.clone());
    }
    let Some(first) = first else {
        return Err(Internal("import without labels".into()));
    };
    if first.disk_count as usize != probed.len() {
        return Err(FailedPrecondition(format!(
            "pool {name:?} spans {} disks; the request names {}",
            first.disk_count,
            probed.len()
        )));
    }
    let mut disks: Vec<PoolDisk> = probed
        .into_iter()
        .filter_map(|p| {
            p.label.map(|label| PoolDisk {
                disk: p.disk,
                label,
            })
        })
        .collect();
    disks.sort_by_key(|d| d.label.disk_index);
    if disks
        .iter()
        .enumerate()
        .any(|(i, d)| d.label.disk_index as usize != i)
    {
        return Err(FailedPrecondition(format!(
            "the disks of pool {name:?} carry duplicate disk indexes"
        )));
    }
    let replicas = match disks.first() {
        Some(d) => d
            .disk
            .read_at(replicas::TABLE_OFFSET, replicas::TABLE_LIMIT, false)
            .map(|bytes| replicas::decode(&bytes))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(LoadedPool {
        uuid: first.pool_uuid,
        disks,
        replicas,
    })
}

/// Health of one disk of a loaded pool, with the reason when not online.
fn disk_health(d: &PoolDisk) -> (Health, Option<String>) {
    let key = d.disk.spec().key();
    match d.disk.presence() {
        Presence::Present => {}
        Presence::Missing => return (Health::Faulted, Some(format!("disk {key} is missing"))),
        Presence::NotADisk(why) => return (Health::Faulted, Some(format!("disk {key}: {why}"))),
    }
    match d.disk.size() {
        Ok(0) => {
            return (
                Health::Faulted,
                Some(format!("disk {key} is gone (size 0)")),
            );
        }
        Ok(s) if s < d.label.disk_size => {
            return (
                Health::Faulted,
                Some(format!("disk {key} shrank to {s} bytes")),
            );
        }
        Ok(_) => {}
        Err(e) => {
            return (
                Health::Faulted,
                Some(format!("disk {key} cannot be opened: {e}")),
            );
        }
    }
    match d.disk.read_at(0, LABEL_SIZE, true) {
        Err(e) => {
            return (
                Health::Degraded,
                Some(format!("disk {key} fails reads: {e}")),
            );
        }
        Ok(block) => {
            if Label::decode(&block) != LabelRead::Valid(d.label.clone()) {
                return (
                    Health::Faulted,
                    Some(format!("disk {key} no longer carries this pool's label")),
                );
            }
        }
    }
    match d.disk.read_only() {
        Ok(false) => (Health::Online, None),
        Ok(true) => (Health::Degraded, Some(format!("disk {key} is read-only"))),
        Err(e) => (Health::Degraded, Some(format!("disk {key}: {e}"))),
    }
}

fn info(name: &str, pool: &LoadedPool) -> PoolInfo {
    let mut state = Health::Online;
    let mut reasons = Vec::new();
    for d in &pool.disks {
        let (h, why) = disk_health(d);
        state = state.max(h);
        reasons.extend(why);
    }
    PoolInfo {
        name: name.to_owned(),
        uuid: pool.uuid,
        disks: pool
            .disks
            .iter()
            .map(|d| d.disk.spec().uri(&d.label.disk_uuid))
            .collect(),
        state,
        reasons,
        capacity: pool.disks.iter().map(|d| d.label.usable_bytes()).sum(),
        used: pool.replicas.iter().map(|r| r.size).sum(),
        disk_capacity: pool.disks.iter().map(|d| d.label.disk_size).sum(),
        cluster_size: pool
            .disks
            .first()
            .map_or(DEFAULT_CLUSTER_SIZE, |d| d.label.cluster_size),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(uuid: &str, size: u64) -> Replica {
        Replica {
            uuid: uuid.into(),
            name: uuid.into(),
            size,
            thin: false,
        }
    }

    /// Replicas as the engine keeps them: on the pool, across an unload and
    /// an import, and gone with a destroyed pool.
    #[test]
    fn replicas_live_and_die_with_their_pool() {
        let pools = Pools::new(vec![PathBuf::from("/dev")], false);
        let disks = vec!["malloc:///r1?size_mb=64".to_string()];
        let p = pools
            .create("p", None, &disks, Mode::CreateOrImport)
            .expect("created");
        assert_eq!(
            pools.create_replica("nope", replica("a", 1 << 20)),
            Err(PoolError::FailedPrecondition(
                "pool \"nope\" not found".into()
            ))
        );
        pools
            .create_replica("p", replica("a", 8 << 20))
            .expect("by name");
        pools
            .create_replica(&p.uuid.to_string(), replica("b", 8 << 20))
            .expect("by uuid");
        assert!(matches!(
            pools.create_replica("p", replica("a", 1 << 20)),
            Err(PoolError::AlreadyExists(_))
        ));
        assert!(matches!(
            pools.create_replica("p", replica("c", 1 << 30)),
            Err(PoolError::ResourceExhausted(_))
        ));
        assert_eq!(pools.list()[0].used, 16 << 20);
        assert!(matches!(
            pools.destroy_replica("a", Some("other")),
            Err(PoolError::Aborted(_))
        ));
        assert!(matches!(
            pools.destroy_replica("zz", None),
            Err(PoolError::NotFound(_))
        ));
        pools.destroy_replica("a", Some("p")).expect("destroyed");
        // Unloaded (a restart), nothing is listed; imported, it is back.
        pools.export("p", None).expect("exported");
        assert!(pools.list_replicas().is_empty());
        pools
            .create("p", None, &disks, Mode::ImportOnly)
            .expect("imported");
        let listed: Vec<String> = pools
            .list_replicas()
            .into_iter()
            .map(|r| r.replica.uuid)
            .collect();
        assert_eq!(listed, vec!["b".to_string()]);
        // DestroyPool takes the replicas with it.
        pools.destroy("p", None).expect("destroyed");
        pools
            .create("p", None, &disks, Mode::CreateOrImport)
            .expect("created anew");
        assert!(pools.list_replicas().is_empty());
    }
}
