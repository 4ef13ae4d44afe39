//! The on-disk pool label: what makes a disk part of a pool, and survives the
//! storage node.
//!
//! One label sits in the first 4 KiB block of every disk of a pool. The first
//! [`RESERVED_BYTES`] (1 MiB) of each disk are reserved for it and future
//! metadata; the pool's data area starts there, and capacity counts only
//! the bytes after it. Layout (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MSPPOOL1` |
//! | 8 | 4 | format version (1) |
//! | 12 | 16 | pool uuid |
//! | 28 | 16 | disk uuid (reported in the disk URI) |
//! | 44 | 4 | disk index |
//! | 48 | 4 | disk count |
//! | 52 | 8 | disk size at creation (bytes) |
//! | 60 | 8 | data offset (bytes) |
//! | 68 | 4 | cluster size (bytes) |
//! | 72 | 2 | pool name length |
//! | 74 | 255 | pool name (UTF-8) |
//! | 4064 | 32 | SHA-256 of bytes 0..4064 |
//!
//! Parsing is separate from I/O so it is tested without disks.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Size of the label block.
pub const LABEL_SIZE: usize = 4096;
/// Bytes reserved at the start of each disk (label and metadata); the data
/// area starts here.
pub const RESERVED_BYTES: u64 = 1024 * 1024;
/// Magic at offset 0.
pub const MAGIC: &[u8; 8] = b"MSPPOOL1";
/// The label format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest pool name a label holds.
pub const MAX_NAME_LEN: usize = 255;

const CHECKSUM_AT: usize = LABEL_SIZE - 32;

/// A pool label as stored on one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub pool_name: String,
    pub pool_uuid: Uuid,
    pub disk_uuid: Uuid,
    pub disk_index: u32,
    pub disk_count: u32,
    pub disk_size: u64,
    pub data_offset: u64,
    pub cluster_size: u32,
}

/// What the first block of a disk says about our label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRead {
    /// No label magic: not one of our disks.
    Absent,
    /// Our magic, and a label that checks out.
    Valid(Label),
    /// Our magic but a label we cannot trust (bad checksum, unknown version,
    /// bad name): never overwritten, never imported.
    Corrupt(String),
}

impl Label {
    /// Usable bytes of this disk (its size at creation minus the reserve).
    pub fn usable_bytes(&self) -> u64 {
        self.disk_size.saturating_sub(self.data_offset)
    }

    /// The 4 KiB block to write at offset 0.
    pub fn encode(&self) -> [u8; LABEL_SIZE] {
        let mut b = [0u8; LABEL_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..28].copy_from_slice(self.pool_uuid.as_bytes());
        b[28..44].copy_from_slice(self.disk_uuid.as_bytes());
        b[44..48].copy_from_slice(&self.disk_index.to_le_bytes());
        b[48..52].copy_from_slice(&self.disk_count.to_le_bytes());
        b[52..60].copy_from_slice(&self.disk_size.to_le_bytes());
        b[60..68].copy_from_slice(&self.data_offset.to_le_bytes());
        b[68..72].copy_from_slice(&self.cluster_size.to_le_bytes());
        // Names are validated before a label is built; clip defensively.
        let name = &self.pool_name.as_bytes()[..self.pool_name.len().min(MAX_NAME_LEN)];
        b[72..74].copy_from_slice(&(name.len() as u16).to_le_bytes());
        b[74..74 + name.len()].copy_from_slice(name);
        let sum = Sha256::digest(&b[..CHECKSUM_AT]);
        b[CHECKSUM_AT..].copy_from_slice(&sum);
        b
    }

    /// Reads a label from the first bytes of a disk (at least [`LABEL_SIZE`]).
    pub fn decode(block: &[u8]) -> LabelRead {
        if block.len() < LABEL_SIZE || &block[0..8] != MAGIC {
            return LabelRead::Absent;
        }
        let b = &block[..LABEL_SIZE];
        if Sha256::digest(&b[..CHECKSUM_AT]).as_slice() != &b[CHECKSUM_AT..] {
            return LabelRead::Corrupt("label checksum mismatch".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let uuid_at = |i: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[i..i + 16]);
            Uuid::from_bytes(a)
        };
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return LabelRead::Corrupt(format!("unknown label format version {version}"));
        }
        let name_len = u16::from_le_bytes([b[72], b[73]]) as usize;
        if name_len == 0 || name_len > MAX_NAME_LEN {
            return LabelRead::Corrupt(format!("bad pool name length {name_len}"));
        }
        let Ok(pool_name) = std::str::from_utf8(&b[74..74 + name_len]) else {
            return LabelRead::Corrupt("pool name is not UTF-8".into());
        };
        let label = Label {
            pool_name: pool_name.to_owned(),
            pool_uuid: uuid_at(12),
            disk_uuid: uuid_at(28),
            disk_index: u32_at(44),
            disk_count: u32_at(48),
            disk_size: u64_at(52),
            data_offset: u64_at(60),
            cluster_size: u32_at(68),
        };
        if label.disk_count == 0 || label.disk_index >= label.disk_count {
            return LabelRead::Corrupt(format!(
                "disk index {} of {} is impossible",
                label.disk_index, label.disk_count
            ));
        }
        LabelRead::Valid(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Label {
        Label {
            pool_name: "pool-a".into(),
            pool_uuid: Uuid::new_v4(),
            disk_uuid: Uuid::new_v4(),
            disk_index: 1,
            disk_count: 2,
            disk_size: 64 << 20,
            data_offset: RESERVED_BYTES,
            cluster_size: 4 << 20,
        }
    }

    #[test]
    fn round_trip() {
        let l = sample();
        assert_eq!(Label::decode(&l.encode()), LabelRead::Valid(l.clone()));
        assert_eq!(l.usable_bytes(), 63 << 20);
    }

    #[test]
    fn zeroes_are_absent() {
        assert_eq!(Label::decode(&[0u8; LABEL_SIZE]), LabelRead::Absent);
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let mut b = sample().encode();
        b[80] ^= 1;
        assert!(matches!(Label::decode(&b), LabelRead::Corrupt(m) if m.contains("checksum")));
    }
}
