//! Recognises what else a disk may hold, so the node never writes over it.
//!
//! Works on the first [`PROBE_BYTES`] of a disk (read by the caller), looking
//! for the magic numbers of common filesystems, LVM, partition tables and
//! other pools, like `blkid` does. Anything found makes CreatePool refuse the
//! disk with a message naming it. The caller checks for our own label first.

/// How many bytes from the start of a disk the probe looks at.
pub const PROBE_BYTES: usize = 72 * 1024;

/// Names the first foreign signature found in `head` (the first bytes of a
/// disk), or `None` when the probed area holds none that we know.
pub fn foreign_signature(head: &[u8]) -> Option<String> {
    signature(head).map(|s| s.what)
}

/// What a foreign signature is, in the terms `ListBlockDevices` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// For an admin: "an ext4 filesystem".
    pub what: String,
    /// What udev calls it (`ID_FS_TYPE`: "ext4", "LVM2_member"), for a
    /// filesystem or another content signature.
    pub fstype: Option<&'static str>,
    /// The scheme of a partition table ("gpt", "dos").
    pub partition_table: Option<&'static str>,
}

fn fs(what: impl Into<String>, fstype: &'static str) -> Option<Signature> {
    Some(Signature {
        what: what.into(),
        fstype: Some(fstype),
        partition_table: None,
    })
}

fn table(what: &str, scheme: &'static str) -> Option<Signature> {
    Some(Signature {
        what: what.into(),
        fstype: None,
        partition_table: Some(scheme),
    })
}

/// The first foreign signature found in `head`, with its udev names.
pub fn signature(head: &[u8]) -> Option<Signature> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    let u16_at = |off: usize| {
        head.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        head.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };

    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56.
    if u16_at(1024 + 56) == Some(0xEF53) {
        let compat = u32_at(1024 + 0x5C).unwrap_or(0);
        let incompat = u32_at(1024 + 0x60).unwrap_or(0);
        // extents, 64bit, flex_bg are ext4-only; a journal without them is ext3.
        let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return fs(format!("an {kind} filesystem"), kind);
    }
    if at(0, b"XFSB") {
        return fs("an xfs filesystem", "xfs");
    }
    if at(0x10040, b"_BHRfS_M") {
        return fs("a btrfs filesystem", "btrfs");
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if at(page - 10, b"SWAPSPACE2") || at(page - 10, b"SWAP-SPACE") {
            return fs("a swap area", "swap");
        }
    }
    // LVM2 physical volume: "LABELONE" in one of the first four sectors.
    for sector in 0..4 {
        let off = sector * 512;
        if at(off, b"LABELONE") && at(off + 24, b"LVM2 001") {
            return fs("an LVM2 physical volume", "LVM2_member");
        }
    }
    if at(0, b"LUKS\xba\xbe") {
        return fs("a LUKS encrypted volume", "crypto_LUKS");
    }
    // SPDK blobstore: how the io-engine's lvs pools start.
    if at(0, b"SPDKBLOB") {
        return fs("an SPDK blobstore (an io-engine pool)", "spdk_blobstore");
    }
    if at(32769, b"CD001") {
        return fs("an iso9660 filesystem", "iso9660");
    }
    if at(3, b"NTFS    ") {
        return fs("an ntfs filesystem", "ntfs");
    }
    if at(82, b"FAT32   ") || at(54, b"FAT16   ") || at(54, b"FAT12   ") {
        return fs("a vfat filesystem", "vfat");
    }
    // GPT header in LBA 1 (512- or 4096-byte sectors).
    if at(512, b"EFI PART") || at(4096, b"EFI PART") {
        return table("a GPT partition table", "gpt");
    }
    // MBR: boot signature plus at least one used partition entry.
    if at(510, &[0x55, 0xAA]) {
        let used = (0..4).any(|i| head.get(446 + i * 16 + 4).is_some_and(|t| *t != 0));
        if used {
            return table("an MBR (dos) partition table", "dos");
        }
        return table("a boot sector (0x55AA signature)", "dos");
    }
    // ZFS labels keep uberblocks (magic 0x00bab10c) from 128 KiB on; only the
    // first is inside the probed area when it is large enough.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0u8; PROBE_BYTES]
    }

    #[test]
    fn zeroes_hold_nothing() {
        assert_eq!(foreign_signature(&blank()), None);
    }

    #[test]
    fn recognises_ext4_and_lvm_and_gpt() {
        let mut d = blank();
        d[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        d[1024 + 0x60..1024 + 0x64].copy_from_slice(&0x40u32.to_le_bytes());
        assert_eq!(foreign_signature(&d).as_deref(), Some("an ext4 filesystem"));

        let mut d = blank();
        d[512..520].copy_from_slice(b"LABELONE");
        d[536..544].copy_from_slice(b"LVM2 001");
        assert!(foreign_signature(&d).is_some_and(|s| s.contains("LVM2")));

        let mut d = blank();
        d[510] = 0x55;
        d[511] = 0xAA;
        d[446 + 4] = 0xEE;
        d[512..520].copy_from_slice(b"EFI PART");
        assert!(foreign_signature(&d).is_some_and(|s| s.contains("GPT")));
    }

    #[test]
    fn short_disk_is_probed_safely() {
        assert_eq!(foreign_signature(&[0u8; 100]), None);
    }
}
