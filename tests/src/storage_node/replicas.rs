//! The replicas of a pool (what the io-engine's `ReplicaRpc` makes on it):
//! a table on the pool's first disk, in the reserved area right after the
//! label, so that replicas survive the node as the pool does and go with it
//! when the pool is destroyed (the engine's DestroyPool destroys every
//! replica on the pool).
//!
//! Layout at [`TABLE_OFFSET`]: magic `MSPREPL1`, u32 little-endian length,
//! then that many bytes of JSON (a list of [`Replica`]), then a SHA-256 of
//! the JSON. A table that does not read back whole is no table: the pool
//! lists no replicas, the way a torn write would lose them. The node keeps
//! no data in a replica: it is a reservation of bytes, with a name.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::label::{LABEL_SIZE, RESERVED_BYTES};

/// Where the table starts on the first disk: the block after the label.
pub const TABLE_OFFSET: u64 = LABEL_SIZE as u64;
/// The most the table may take (the rest of the reserve).
pub const TABLE_LIMIT: usize = (RESERVED_BYTES - TABLE_OFFSET) as usize;
const MAGIC: &[u8; 8] = b"MSPREPL1";

/// One replica on a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub uuid: String,
    pub name: String,
    /// Bytes.
    pub size: u64,
    pub thin: bool,
}

/// The table's bytes for `replicas`, or `None` when they do not fit.
pub fn encode(replicas: &[Replica]) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(replicas).ok()?;
    let mut out = Vec::with_capacity(json.len() + 44);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(json.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&Sha256::digest(&json));
    (out.len() <= TABLE_LIMIT).then_some(out)
}

/// The replicas a table holds; none for anything that is not a whole table.
pub fn decode(bytes: &[u8]) -> Vec<Replica> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Vec::new();
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Vec::new();
    };
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len + 32 {
        return Vec::new();
    }
    let (json, sum) = rest.split_at(len);
    if Sha256::digest(json).as_slice() != &sum[..32] {
        return Vec::new();
    }
    serde_json::from_slice(json).unwrap_or_default()
}

/// Bytes that erase a table (its magic) of `len` bytes.
pub fn erased() -> [u8; 8] {
    [0u8; 8]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uuid: &str) -> Replica {
        Replica {
            uuid: uuid.into(),
            name: format!("r-{uuid}"),
            size: 32 << 20,
            thin: false,
        }
    }

    #[test]
    fn a_table_reads_back() {
        let table = encode(&[r("a"), r("b")]).expect("fits");
        assert_eq!(decode(&table), vec![r("a"), r("b")]);
        assert!(decode(&encode(&[]).expect("fits")).is_empty());
    }

    #[test]
    fn a_torn_or_erased_table_holds_nothing() {
        let mut table = encode(&[r("a")]).expect("fits");
        let last = table.len() - 40;
        table[last] ^= 1;
        assert!(decode(&table).is_empty());
        assert!(decode(&[0u8; 64]).is_empty());
        let mut erased_table = encode(&[r("a")]).expect("fits");
        erased_table[..8].copy_from_slice(&erased());
        assert!(decode(&erased_table).is_empty());
    }
}
