//! Every signature libblkid finds on a disk, through `wipefs -n -J`: the
//! library the io-engine's view of disks comes from (udev), and the one that
//! also reads the ends of disks (md-RAID 0.90/1.0, ZFS labels, bcache,
//! Intel/DDF RAID metadata, the backup GPT) that [`super::probe`]'s table of
//! magic numbers at the start cannot see. `blkid -p` stops at one answer and
//! only says "ambivalent" when it sees several; `wipefs` lists them all.
//!
//! Fails closed: a disk counts as blank only when wipefs ran and listed no
//! signature. A missing tool, a failed probe or output we cannot read is an
//! error, and the caller refuses the disk.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

/// The program asked; util-linux's.
pub const WIPEFS: &str = "wipefs";

/// One signature libblkid found.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Found {
    /// What libblkid calls it ("ext4", "linux_raid_member", "gpt", "PMBR").
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Byte offset of the magic, as wipefs prints it ("0x3ff0000").
    pub offset: String,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind.as_deref().unwrap_or("unnamed");
        write!(f, "a {kind} signature at offset {}", self.offset)
    }
}

#[derive(Deserialize)]
struct Listing {
    signatures: Vec<Found>,
}

/// Why the disk could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{program} could not be run ({source}); it comes with util-linux")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{program} printed what is not its JSON listing ({0})", program = WIPEFS)]
    Unreadable(#[source] serde_json::Error),
}

/// Every signature on `path`, by asking `program` (normally [`WIPEFS`]) to
/// list them without touching anything. Empty only when the probe ran and
/// found nothing.
pub fn signatures(program: &str, path: &Path) -> Result<Vec<Found>, ProbeError> {
    let out = Command::new(program)
        .args(["--no-act", "--json"])
        .arg(path)
        .output()
        .map_err(|source| ProbeError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(ProbeError::Failed {
            program: program.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    parse(&out.stdout)
}

/// The signatures of a `wipefs -J` listing.
fn parse(stdout: &[u8]) -> Result<Vec<Found>, ProbeError> {
    serde_json::from_slice::<Listing>(stdout)
        .map(|l| l.signatures)
        .map_err(ProbeError::Unreadable)
}

/// "a bfs signature at offset 0x0 and a minix signature at offset 0x410".
pub fn describe(found: &[Found]) -> String {
    found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_listing_is_blank() {
        let found = parse(b"{\n   \"signatures\": [\n\n   ]\n}\n").expect("parses");
        assert!(found.is_empty());
    }

    #[test]
    fn lists_every_signature() {
        let out = br#"{"signatures": [
            {"device": "loop0", "offset": "0x3ff0000", "type": "linux_raid_member", "uuid": null, "label": null},
            {"device": "loop0", "offset": "0x0", "type": "bfs", "uuid": null, "label": null}]}"#;
        let found = parse(out).expect("parses");
        assert_eq!(
            describe(&found),
            "a linux_raid_member signature at offset 0x3ff0000 and a bfs signature at offset 0x0"
        );
    }

    #[test]
    fn output_it_cannot_read_is_an_error_not_blank() {
        assert!(parse(b"").is_err());
        assert!(parse(b"loop0: 2 signatures").is_err());
    }

    #[test]
    fn a_missing_tool_is_an_error_not_blank() {
        let err = signatures("msp-no-such-wipefs", Path::new("/dev/null")).expect_err("no tool");
        assert!(matches!(err, ProbeError::Spawn { .. }), "{err}");
    }

    #[test]
    fn a_failed_probe_is_an_error_not_blank() {
        let err = signatures(WIPEFS, Path::new("/nonexistent/msp-disk")).expect_err("fails");
        assert!(matches!(err, ProbeError::Failed { .. }), "{err}");
    }
}
